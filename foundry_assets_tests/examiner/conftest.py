"""Examiner fixtures: the tiny model after a short full fine-tuning on TRAIN, the candidate of every exam."""

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
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    texts = [render_text(tokenizer, [*c.prompt, *c.completion], generation_prompt=False) for c in TRAIN]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(40):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses
    out = tmp_path_factory.mktemp("trained") / "model"
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
