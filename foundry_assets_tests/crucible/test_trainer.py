"""The trainer's settings: what each backend and strategy is told about batching."""

from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.crucible.trainer import padding_free

from .conftest import PARAMS


def test_dora_on_unsloth_trains_on_padded_batches() -> None:
    """Unsloth's per-decoder-layer compile skips padding-free batches, which halved DoRA's speed on an H100
    (benchmarks/RESULTS.md); DoRA on Unsloth pads unless told otherwise, the rest keep the stack's own choice."""
    import dataclasses

    choose = padding_free
    assert choose(PARAMS, get_strategy("dora"), "unsloth") is False
    assert choose(PARAMS, get_strategy("dora"), "peft") is None
    for name in ("lora", "qlora", "orpo"):
        assert choose(PARAMS, get_strategy(name), "unsloth") is None
    assert choose(dataclasses.replace(PARAMS, padding_free=True), get_strategy("dora"), "unsloth") is True
    assert choose(dataclasses.replace(PARAMS, padding_free=False), get_strategy("lora"), "unsloth") is False
