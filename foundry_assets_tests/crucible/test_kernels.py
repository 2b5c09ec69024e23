"""The kernel a run's batches take, as its metadata records it."""

from typing import Any

import pytest
import torch

from foundry_assets.crucible.kernels import PER_SEGMENT, describe_kernels

from .conftest import UNSLOTH

needs_unsloth = pytest.mark.skipif(not UNSLOTH, reason="reads Unsloth's attention dispatch")


@needs_unsloth
@pytest.mark.parametrize(
    ("varlen", "expected"),
    [(None, PER_SEGMENT), (torch.nn.functional.scaled_dot_product_attention, "varlen_attn")],
)
def test_packed_rows_record_how_unsloths_sdpa_route_runs_them(
    varlen: Any, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without flash-attn or xformers, Unsloth runs a packed row through torch's varlen kernel where torch has one
    for grouped-query heads, else one SDPA call per example (the H200 image's torch 2.11): the metadata says which."""
    import unsloth.models.llama  # noqa: F401  (loads the dispatch module as a model load would: it imports llama back)
    from unsloth.utils import attention_dispatch as dispatch

    monkeypatch.setattr(dispatch, "HAS_FLASH_ATTENTION", False)
    monkeypatch.setattr(dispatch, "HAS_XFORMERS", False)
    monkeypatch.setattr(dispatch, "_TORCH_VARLEN_ATTN", varlen)
    packed = describe_kernels(flat=True, backend="unsloth", device="cuda", model=None)
    assert packed["attention"].startswith("unsloth sdpa (") and expected in packed["attention"]
    assert packed["attention"].endswith("over packed_seq_lengths") and packed["decoder_layers"].startswith(
        "eager"
    )
    padded = describe_kernels(flat=False, backend="unsloth", device="cuda", model=None)
    assert padded["attention"] == "unsloth sdpa, padded rows" and PER_SEGMENT not in padded["attention"]
