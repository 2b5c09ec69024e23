"""Examiner fixtures: the tiny model after a short full fine-tuning on TRAIN, the candidate of every exam, and after a
barely started one (a model that beats the base but not the trained one: the champion tests' weak side)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.chat_template import render_text
from foundry_assets_tests.examiner.texts import TRAIN


@pytest.fixture(scope="package")
def trained_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a few dozen full fine-tuning steps on TRAIN rendered with its chat template (plain torch
    loop, every token trained)."""
    return _fine_tuned(tiny_model_dir, tmp_path_factory.mktemp("trained") / "model", steps=40)


@pytest.fixture(scope="package")
def barely_trained_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after two steps of the same fine-tuning: better than the base, far from `trained_dir`."""
    return _fine_tuned(tiny_model_dir, tmp_path_factory.mktemp("barely") / "model", steps=2)


def _fine_tuned(tiny_model_dir: Path, out: Path, *, steps: int) -> Path:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    texts = [render_text(tokenizer, [*c.prompt, *c.completion], generation_prompt=False) for c in TRAIN]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert steps < 10 or losses[-1] < losses[0] - 1.0, losses
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
