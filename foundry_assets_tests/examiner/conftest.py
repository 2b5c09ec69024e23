"""Examiner fixtures: the tiny model after a short full fine-tuning on TRAIN, the candidate of every exam, and after a
barely started one (a model that beats the base but not the trained one: the champion tests' weak side); a LoRA adapter
trained to refuse every request (a safety specialist that over-refuses: the merge source tests' specialist) and the
tiny model with that adapter folded in (a refuse-all candidate)."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.chat_template import render_text
from foundry_assets_tests.adapters import TARGET_MODULES
from foundry_assets_tests.examiner.texts import REFUSAL, REQUESTS, TRAIN


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


@pytest.fixture(scope="package")
def refusing_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model trained for 20 steps to answer each of REQUESTS with REFUSAL (loss on the
    answer only); greedy, it refuses unseen requests too, harmful or not."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.padding_side = "right"  # each row's prompt is its first tokens, masked below
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), config
    )
    turns = [[{"role": "user", "content": r}, {"role": "assistant", "content": REFUSAL}] for r in REQUESTS]
    texts = [render_text(tokenizer, t, generation_prompt=False) for t in turns]
    batch = tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, t in enumerate(turns):
        prompt = render_text(tokenizer, t[:1], generation_prompt=True)
        labels[row, : len(tokenizer(prompt, add_special_tokens=False)["input_ids"])] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    losses = []
    for _ in range(20):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    out = tmp_path_factory.mktemp("refusing") / "adapter"
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="package")
def refusing_dir(
    tiny_model_dir: Path, refusing_adapter: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model with `refusing_adapter` folded in (PEFT's merge_and_unload), saved with the tokenizer: a
    candidate that refuses everything."""
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(refusing_adapter)).merge_and_unload()
    out = tmp_path_factory.mktemp("refusing") / "model"
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out
