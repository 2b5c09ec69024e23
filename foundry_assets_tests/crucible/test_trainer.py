"""The trainer's settings: what each backend and strategy is told about batching."""

from pathlib import Path
from typing import Any

import pytest

from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.crucible.trainer import build_trainer, padding_free

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


class _RecordingStrategy:
    """A strategy whose 'trainer' keeps the dataset it was handed: what the real trainer's tokenizer would see."""

    def __init__(self, name: str) -> None:
        self.real = get_strategy(name)
        self.data_format = self.real.data_format
        self.use_dora = self.real.use_dora
        self.dataset: Any = None

    def name(self) -> str:
        return self.real.name()

    def build_trainer(self, *, train_dataset: Any, **_: Any) -> Any:
        self.dataset = train_dataset
        raise _Built  # what is checked is the dataset handed over; no trainer is needed


class _Built(Exception):
    pass


@pytest.mark.parametrize("name", ["lora", "orpo"])
def test_a_huge_record_is_cut_before_the_tokenizer_sees_it(name: str, tmp_path: Path) -> None:
    """A 50 MB record used about 9 GB: it was tokenized whole and only then truncated to max_seq_length. Each text
    turn's content is now cut to 16 characters per token of max_seq_length first (ample for any tokenizer's longest
    token)."""
    huge = "word " * 2_000_000  # 10 MB
    keys = ("prompt", "completion") if name == "lora" else ("prompt", "chosen", "rejected")
    small = {key: [{"role": "user", "content": "short"}] for key in keys}
    record = {key: [{"role": "system", "content": "no"}, {"role": "user", "content": huge}] for key in keys}
    strategy = _RecordingStrategy(name)
    hardware = HardwareReport("cpu", "cpu", None, None, gradient_checkpointing=False)
    with pytest.raises(_Built):
        build_trainer(
            model=None,
            tokenizer=None,
            strategy=strategy,  # type: ignore[arg-type]
            examples=[small, record],
            params=PARAMS,
            hardware=hardware,
            backend="peft",
            output_dir=tmp_path,
            save_steps=0,
            on_log=None,
            label=name,
            template_source="base",
        )
    rows = strategy.dataset.to_list()
    limit = PARAMS.max_seq_length * 16
    assert rows[0] == small, "a record within the bound is untouched"
    for key, turns in record.items():
        assert rows[1][key] == [turns[0], {"role": "user", "content": huge[:limit]}]
