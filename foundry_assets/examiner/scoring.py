"""What the exam measures on one model: token-weighted held-out loss, greedy answers, and how answers are compared."""

import sys
from pathlib import Path
from typing import Any

from foundry_assets.crucible.preconditions import CHARS_PER_TOKEN_BOUND
from foundry_assets.devices import model_dtype, resolve_device
from foundry_assets.errors import DataError
from foundry_assets.examiner.models import BATCH_SIZES, batches, free_memory, load_model, pad_id

LOSS_CHUNK_TOKENS = 1024
"""Logit rows upcast to float32 at a time for the loss: 1024 × a 128k vocabulary is 0.5 GB, never batch × seq × vocab."""


def token_loss(
    model: Any, tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int, batch_tokens: int
) -> float:
    """Mean next-token negative log-likelihood of a loaded model over all tokens of `texts` (token-weighted)."""
    import torch
    import torch.nn.functional as F

    pad = pad_id(tokenizer)
    # cut before tokenizing (truncation keeps the start, so the tokens are the same): a 50 MB test record is never
    # tokenized whole
    limit = max_length * CHARS_PER_TOKEN_BOUND
    encoded = [tokenizer(t[:limit], truncation=True, max_length=max_length)["input_ids"] for t in texts]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches([len(ids) for ids in encoded], batch_size, batch_tokens):
            rows = [encoded[i] for i in batch]
            width = len(rows[0])
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, : len(ids)] = 1
            input_ids, attention = input_ids.to(model.device), attention.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            # The logits stay in the model's dtype (bf16 on a GPU); each row's real positions are upcast to float32 in
            # chunks of LOSS_CHUNK_TOKENS for the cross-entropy, so float32 logits never exist for the whole
            # batch × seq × vocab (16 GB at 32 × 512 × 128k), and padding is never scored. The sum is kept in float64
            # on the device and read once per batch (one sync, not one per chunk).
            nll = torch.zeros((), dtype=torch.float64, device=logits.device)
            for row, ids in enumerate(rows):
                for start in range(0, len(ids) - 1, LOSS_CHUNK_TOKENS):
                    stop = min(start + LOSS_CHUNK_TOKENS, len(ids) - 1)
                    chunk = F.cross_entropy(
                        logits[row, start:stop].float(), input_ids[row, start + 1 : stop + 1], reduction="sum"
                    )
                    nll += chunk.double()
            total_nll += float(nll)
            total_tokens += sum(len(ids) - 1 for ids in rows)
            del logits
    if total_tokens == 0:
        raise DataError(
            f"none of the {len(texts)} held-out texts has two or more tokens; there is nothing to score"
        )
    return total_nll / total_tokens


def heldout_loss(
    model_dir: Path,
    texts: list[str],
    *,
    max_length: int = 512,
    batch_size: int | None = None,
    device: str = "cpu",
) -> float:
    """Mean next-token negative log-likelihood over all tokens of `texts` (token-weighted), in eval mode.

    `device` is "cpu", "cuda" or "auto" (as `compute.device`); `batch_size` defaults by device (BATCH_SIZES).
    """
    if not texts:
        raise DataError("heldout_loss got no texts; give at least one held-out text")
    resolved = resolve_device(device)
    sizes = BATCH_SIZES[resolved]
    model, tokenizer = load_model(Path(model_dir), resolved, model_dtype(Path(model_dir), resolved))
    try:
        return token_loss(
            model,
            tokenizer,
            texts,
            max_length=max_length,
            batch_size=batch_size or sizes.loss_rows,
            batch_tokens=sizes.loss_tokens if batch_size is None else batch_size * max_length,
        )
    finally:
        del model
        free_memory(resolved)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to `prompts` in their order (left-padded batches of similar length on the model's device), each
    cut at its first line break."""
    import torch

    answers = [""] * len(prompts)
    pad = pad_id(tokenizer)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    with torch.inference_mode():
        for batch in batches([len(ids) for ids in encoded], batch_size, sys.maxsize):
            rows = [encoded[i] for i in batch]
            width = len(rows[0])
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            out = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            for index, generated in zip(batch, out[:, width:].tolist(), strict=True):
                text = tokenizer.decode(generated, skip_special_tokens=True)
                answers[index] = text.strip().split("\n", 1)[0].strip()
    return answers


_PUNCT_EDGES = " \t\"'`.,;:!?()[]{}"


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation and quotes: "  Yes. " → "yes"."""
    return " ".join(text.lower().split()).strip(_PUNCT_EDGES)
