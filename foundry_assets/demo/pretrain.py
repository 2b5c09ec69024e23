"""A small pretrained base built offline: a Llama-architecture model pretrained here on `skills.pretraining_documents`.

On a random-init base a skill adapter has to relearn whole weights, and two such adapters destroy each other when
merged. On a pretrained base a skill is a small task vector (the DARE paper's setting), which is what Story C needs to
show a merge that keeps both skills. The model and its byte-level BPE tokenizer are written like `build_tiny_llama`'s,
with `foundry_pretrained.json` recording how it was pretrained (steps, tokens, final loss, seconds, device).
"""

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from foundry_assets.demo.skills import pretraining_documents, tokenizer_corpus
from foundry_assets.demo.tiny_model import build_tokenizer, llama_config
from foundry_assets.fsio import build_dir

PRETRAINED_RECORD = "foundry_pretrained.json"


@dataclass(frozen=True)
class PretrainConfig:
    """The base's shape and its pretraining run. The defaults pretrain in a few minutes on two CPU cores."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    vocab_size: int = 1024
    seq_len: int = 128
    batch_size: int = 32
    steps: int = 1500
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    seed: int = 0


STORY_BASE = PretrainConfig(hidden_size=256, num_layers=6, steps=3000, learning_rate=2e-3)
"""The base of the pretrained Story C (5.5M parameters, 12.3M tokens): the smallest measured on which a DARE-TIES merge
of the two skill adapters keeps both (benchmarks/RESULTS.md, "Issue 16"). About 130 s on an H200; on two CPU cores
well over an hour, so a CPU demo takes a base pretrained elsewhere (`foundry demo --story c --base DIR`)."""


def _token_stream(tokenizer: Any, seed: int) -> Any:
    """Endless token ids: each document as BOS … EOS (a conversation rendered with the chat template, which adds its
    own), one after another, as pretraining packs them."""
    for text, turns in pretraining_documents(seed):
        if turns is None:
            yield from [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
            yield tokenizer.eos_token_id
        else:
            yield from tokenizer.apply_chat_template(turns, tokenize=True, return_dict=False)


def _batches(tokenizer: Any, config: PretrainConfig) -> Any:
    stream = _token_stream(tokenizer, config.seed)
    size = config.batch_size * config.seq_len
    while True:
        yield [next(stream) for _ in range(size)]


def _model(tokenizer: Any, config: PretrainConfig, device: str) -> Any:
    """A random-init Llama of the config's shape whose vocabulary is the tokenizer's."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(config.seed)
    model_config = llama_config(
        tokenizer,
        hidden_size=config.hidden_size,
        intermediate_size=config.hidden_size * 3,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=2048,
    )
    model: Any = LlamaForCausalLM(model_config)
    return model.to(device)


def _lr_factor(config: PretrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to a tenth of the learning rate."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        done = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    return factor


def pretrain_base(
    out_dir: str | Path,
    config: PretrainConfig = PretrainConfig(),
    *,
    device: str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> Path:
    """Pretrain the base into `out_dir` (idempotent: a folder holding a pretrained model is returned as it is);
    `progress(step, mean loss)` is called every 100 steps."""
    out = Path(out_dir)
    if (out / PRETRAINED_RECORD).exists():
        return out
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    tokenizer = build_tokenizer(tokenizer_corpus(), vocab_size=config.vocab_size)
    model = _model(tokenizer, config, device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=0.01, betas=(0.9, 0.95)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    started, losses = time.perf_counter(), []
    model.train()
    for step, ids in zip(range(config.steps), _batches(tokenizer, config), strict=False):
        batch = torch.tensor(ids, device=device).view(config.batch_size, config.seq_len)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if progress is not None and (step + 1) % 100 == 0:
            progress(step + 1, sum(losses[-100:]) / 100)
    model.eval()
    record = {
        **asdict(config),
        "tokens": config.steps * config.batch_size * config.seq_len,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "first_loss": round(losses[0], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "device": device,
    }

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / PRETRAINED_RECORD).write_text(json.dumps(record, indent=2))

    build_dir(out, save)
    return out
