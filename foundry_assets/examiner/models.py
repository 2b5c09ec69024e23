"""Loading the exam's models (base, champion, candidate) one at a time, freeing each before the next, and batching
held-out items.

Every model loads in the device's dtype (`devices.model_dtype`: bf16/fp16 on a GPU, float32 on the CPU) straight onto
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


def load_model(model_dir: Path, device: str, dtype: Any, *, base: Path | None = None) -> tuple[Any, Any]:
    """The tokenizer and the eval-mode model, loaded in `dtype` straight onto `device`.

    `device_map` makes transformers build the model on the meta device and write each weight, already cast, where it
    belongs as it is read (transformers 5 always loads this way and ignores `low_cpu_mem_usage`), so an 8B checkpoint
    never sits whole in host memory, let alone in float32. SDPA attention is asked for explicitly: it is what makes the
    padded batches below cheap, whatever another library (Unsloth) may have patched in this process.

    With `base`, `model_dir` is a PEFT adapter of that base (a champion published as an adapter): the base loads, the
    adapter is applied and folded in (`merge_and_unload`), so what is scored is one plain model like the other sides,
    and the device holds that one model. Its tokenizer is the adapter's when it ships one, else the base's.
    """
    from transformers import AutoTokenizer

    own_tokenizer = base is None or (model_dir / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir if own_tokenizer else base))
    model = _causal_lm(base or model_dir, device, dtype)
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    return model.eval(), tokenizer


def _causal_lm(model_dir: Path, device: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=dtype, device_map=device, attn_implementation="sdpa"
        )
    except ValueError as e:
        if "scaled_dot_product_attention" not in str(e):
            raise
        logger.warning(
            "%s does not support SDPA attention (%s); the exam uses its default attention", model_dir, e
        )
        return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, device_map=device)


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
