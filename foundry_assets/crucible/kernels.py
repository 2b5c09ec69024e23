"""Which attention kernel and decoder-layer path a run's batches take, recorded in `trained_adapter`'s metadata.

Packed rows (`batching.py`) and Unsloth's padding-free batches are rows of several examples told apart by position ids;
which kernel then keeps the examples apart, and whether Unsloth's per-decoder-layer compile still applies, depends on
the stack: measured on an H200 in benchmarks/RESULTS.md, "Training on real lengths".
"""

from typing import Any


def describe_kernels(*, flat: bool, backend: str, device: str, model: Any) -> dict[str, str]:
    """Which attention kernel and decoder-layer path the run's batches take, for the run's metadata; `flat`: its
    batches are rows of several examples told apart by position ids (packed, or Unsloth's padding-free choice)."""
    config = getattr(model, "config", None)
    attention = str(getattr(config, "_attn_implementation", None) or "unknown")
    if backend == "unsloth" and device == "cuda":
        from unsloth.utils.attention_dispatch import select_attention_backend

        kernel = f"unsloth {select_attention_backend(use_varlen=flat)}"
        if (
            flat
        ):  # Unsloth runs its stock forward for a layer that receives packed_seq_lengths (_block_compile.py)
            return {
                "attention": f"{kernel}{_unsloth_packed_path()} over packed_seq_lengths",
                "decoder_layers": "eager (unsloth skips its per-layer compile for packed rows)",
            }
        compiled = "unsloth per-layer compile" if _block_compile() else "eager (unsloth block compile off)"
        return {"attention": f"{kernel}, padded rows", "decoder_layers": compiled}
    if not flat:
        return {"attention": f"{attention}, padded rows with an attention mask", "decoder_layers": "eager"}
    if "flash" in attention:
        return {"attention": f"{attention} varlen from position_ids", "decoder_layers": "eager"}
    return {
        "attention": f"{attention} with a block-diagonal causal mask from position_ids (transformers masking_utils)",
        "decoder_layers": "eager",
    }


PER_SEGMENT = "one attention call per example"


def _unsloth_packed_path() -> str:
    """How Unsloth's SDPA route runs a packed row (`attention_dispatch.run_attention`): torch's varlen flash kernel
    where torch has one that takes grouped-query heads (`varlen_attn` with `enable_gqa`, torch 2.12+), else one SDPA
    call per example. Empty where the backend is flash-attn or xformers (varlen kernels of their own)."""
    from unsloth.utils import attention_dispatch as dispatch

    if dispatch.select_attention_backend(use_varlen=True) != dispatch.SDPA:
        return ""
    if getattr(dispatch, "_TORCH_VARLEN_ATTN", None) is not None:
        return " (torch varlen_attn)"
    import torch

    return f" ({PER_SEGMENT}: torch {torch.__version__.split('+')[0]} has no varlen kernel for grouped-query heads)"


def _block_compile() -> bool:
    """Whether Unsloth's per-decoder-layer compile is on: its own switches (`unsloth/models/_block_compile.py`)."""
    import os

    return os.environ.get("UNSLOTH_BLOCK_COMPILE", "1") != "0" and os.environ.get(
        "UNSLOTH_COMPILE_DISABLE", "0"
    ) not in ("1", "partial")
