"""The small pretrained base: pretraining lowers the loss, the folder loads as a model, and it is built once."""

import json
import math
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.demo.pretrain import PRETRAINED_RECORD, PretrainConfig, pretrain_base

TINY = PretrainConfig(
    hidden_size=32, num_layers=1, num_heads=2, vocab_size=600, seq_len=48, batch_size=4, steps=30
)


def test_pretraining_writes_a_loadable_model_and_its_record(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []
    out = pretrain_base(tmp_path / "base", TINY, progress=lambda step, loss: seen.append((step, loss)))
    record = json.loads((out / PRETRAINED_RECORD).read_text())
    assert record["steps"] == 30 and record["tokens"] == 30 * 4 * 48 and record["device"] == "cpu"
    assert math.isfinite(record["final_loss"]) and record["final_loss"] < record["first_loss"]
    assert seen == []  # progress is reported every 100 steps
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template  # the demo's template: the story jobs train and are examined in it


def test_a_pretrained_folder_is_returned_as_it_is(tmp_path: Path) -> None:
    out = pretrain_base(tmp_path / "base", TINY)
    before = (out / PRETRAINED_RECORD).stat().st_mtime_ns
    assert pretrain_base(out, PretrainConfig(steps=10**6)) == out
    assert (out / PRETRAINED_RECORD).stat().st_mtime_ns == before
