"""What a training run checks and decides before any model loads: the examples' shape, the device, a pre-quantized
base, and the backend (Unsloth, imported first, or PEFT with a recorded warning where Unsloth cannot import)."""

import json
import logging
from pathlib import Path
from typing import Any

from foundry_assets.crucible.backend import Backend, ensure_unsloth_first
from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.strategies import TrainingStrategy
from foundry_assets.errors import DataError, TrainingError

logger = logging.getLogger(__name__)

_REQUIRED_KEYS = {"sft": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected")}
"""The keys of TRL's conversational formats a strategy's rows carry, each a list of {role, content} turns."""


def resolve_backend(backend: str, warnings: list[str]) -> Backend:
    """The backend to train with; importing Unsloth here, before transformers, is what lets its patches apply."""
    if backend == "peft":
        return "peft"
    if backend not in ("auto", "unsloth"):
        raise TrainingError(f"Unknown training backend {backend!r}; choose auto, unsloth or peft.")
    if ensure_unsloth_first():
        return "unsloth"
    if backend == "unsloth":
        raise TrainingError("backend='unsloth' was requested but unsloth cannot be imported; install it.")
    message = "Unsloth cannot be imported: training with transformers + PEFT instead (slower on GPU)."
    logger.warning(message)
    warnings.append(message)
    return "peft"


def _is_turns(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and isinstance(t.get("content"), str) and "role" in t for t in value)
    )


def check_examples(strategy: TrainingStrategy, examples: list[dict[str, Any]]) -> None:
    """Refuse an empty set or records that lack the conversational keys the strategy's trainer reads."""
    if not examples:
        raise DataError(f"No training examples for {strategy.name()}.")
    required = _REQUIRED_KEYS[strategy.data_format]
    for index, example in enumerate(examples):
        missing = [key for key in required if not _is_turns(example.get(key))]
        if missing:
            raise DataError(
                f"Training example {index} for {strategy.name()} ({strategy.data_format} format) lacks "
                f"field(s) {missing} as lists of {{role, content}} turns; it has {sorted(example)}. Curate the drop "
                f"with this version (it writes TRL's conversational {strategy.data_format} rows)."
            )


CHARS_PER_TOKEN_BOUND = 16
"""Characters of a turn's content kept per token of max_seq_length before tokenizing. BPE tokens of natural text average
3-5 characters and rarely exceed 16, so the cut leaves more text than max_seq_length tokens and truncation (which
keeps the start) gives the same tokens; what it prevents is tokenizing a 50 MB record whole (about 9 GB)."""


def _cut(turns: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    return [{**t, "content": t["content"][:limit]} if len(t["content"]) > limit else t for t in turns]


def cap_example_text(examples: list[dict[str, Any]], max_seq_length: int) -> list[dict[str, Any]]:
    """`examples` with every turn's content cut to `max_seq_length * CHARS_PER_TOKEN_BOUND` characters (its start kept,
    as the trainers' truncation keeps it); how many records were cut is logged."""
    limit = max_seq_length * CHARS_PER_TOKEN_BOUND

    def too_long(value: Any) -> bool:
        return isinstance(value, list) and any(len(t["content"]) > limit for t in value)

    capped = [
        {key: _cut(value, limit) if too_long(value) else value for key, value in example.items()}
        if any(too_long(value) for value in example.values())
        else example
        for example in examples
    ]
    cut = sum(1 for before, after in zip(examples, capped, strict=True) if before is not after)
    if cut:
        logger.warning(
            "%d training record(s) cut to %d characters per turn before tokenizing (max_seq_length %d tokens)",
            cut,
            limit,
            max_seq_length,
        )
    return capped


def prequantized_bits(model_path: str | Path) -> int | None:
    """4 or 8 for a local folder saved already quantized by bitsandbytes (`quantization_config` in config.json)."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None  # a hub name: its config is read by the loader
    try:
        quantization = json.loads(config_file.read_text(encoding="utf-8")).get("quantization_config") or {}
    except (OSError, ValueError):
        return None
    if quantization.get("load_in_4bit") or quantization.get("_load_in_4bit"):
        return 4
    if quantization.get("load_in_8bit") or quantization.get("_load_in_8bit"):
        return 8
    return None


def check_prequantized(model_path: str | Path, strategy: TrainingStrategy) -> None:
    """A base saved in 4-bit (e.g. unsloth/llama-3-8b-bnb-4bit) trains only with a 4-bit strategy."""
    bits = prequantized_bits(model_path)
    if bits is not None and not (bits == 4 and strategy.load_in_4bit):
        raise TrainingError(
            f"the base model {model_path} is saved pre-quantized to {bits}-bit by bitsandbytes, but method "
            f"{strategy.name()!r} trains a 16-bit base; use method qlora with this base, or point model_path at "
            "the 16-bit base"
        )


def check_device(hardware: HardwareReport) -> None:
    """Refuse a hardware report that says cuda where torch, in this process, sees no CUDA device."""
    if hardware.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainingError("The hardware report says cuda but torch sees no CUDA device here.")
