"""Loading the two models of the exam one at a time, freeing each before the next, and batching held-out items.

Both models load in the device's dtype (`devices.model_dtype`: bf16/fp16 on a GPU, float32 on the CPU) straight onto
the device; batch sizes depend on the device (BATCH_SIZES).
"""

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchSizes:
    """How many held-out items go through a model at once, by device."""

    loss_rows: int
    loss_tokens: int
    generate_rows: int


BATCH_SIZES = {
    # small on the CPU (a batch there is as slow as its rows together, and pads cost real time)
    "cpu": BatchSizes(loss_rows=8, loss_tokens=4096, generate_rows=16),
    # a GPU is idle at batch 8: 32 rows × 512 tokens of an 8B model in bf16 is 4 GB of logits on a 128k vocabulary
    "cuda": BatchSizes(loss_rows=32, loss_tokens=16384, generate_rows=64),
}


def load_model(model_dir: Path, device: str, dtype: Any) -> tuple[Any, Any]:
    """The tokenizer and the eval-mode model, loaded in `dtype` straight onto `device`.

    `device_map` makes transformers build the model on the meta device and write each weight, already cast, where it
    belongs as it is read (transformers 5 always loads this way and ignores `low_cpu_mem_usage`), so an 8B checkpoint
    never sits whole in host memory, let alone in float32. SDPA attention is asked for explicitly: it is what makes the
    padded batches below cheap, whatever another library (Unsloth) may have patched in this process.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=dtype, device_map=device, attn_implementation="sdpa"
        )
    except ValueError as e:
        if "scaled_dot_product_attention" not in str(e):
            raise
        logger.warning(
            "%s does not support SDPA attention (%s); the exam uses its default attention", model_dir, e
        )
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, device_map=device)
    return model.eval(), tokenizer


def free_memory(device: str) -> None:
    """Return a dropped model's memory before the next one loads (host memory, and CUDA's cached blocks)."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def pad_id(tokenizer: Any) -> int:
    return int(
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    )


def batches(lengths: Sequence[int], rows: int, tokens: int) -> list[list[int]]:
    """Item indices, longest first, in batches of at most `rows` rows and `tokens` padded tokens (≥ 1 row each).

    Sorting by length keeps the padding small; longest first means a batch that does not fit fails at once.
    Callers put each result back at its item's index, so the original order is kept.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    found: list[list[int]] = []
    for i in order:
        current = found[-1] if found else None
        if current and len(current) < rows and (len(current) + 1) * lengths[current[0]] <= tokens:
            current.append(i)
        else:
            found.append([i])
    return found
