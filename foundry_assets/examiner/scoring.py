"""What the exam measures on one model: token-weighted held-out loss on the completions, greedy answers, and how
answers are compared. Conversations and prompts are rendered with the chat template the candidate was trained and
ships with (`render`, `prompt_texts`), so the exam prompts the model the way a chat endpoint will."""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundry_assets.chat_template import Messages, completion_ids, end_of_turn, render_text
from foundry_assets.crucible.preconditions import CHARS_PER_TOKEN_BOUND
from foundry_assets.devices import model_dtype, resolve_device
from foundry_assets.errors import DataError
from foundry_assets.examiner.items import Conversation
from foundry_assets.examiner.models import BATCH_SIZES, batches, free_memory, load_model, pad_id

LOSS_CHUNK_TOKENS = 1024
"""Logit rows upcast to float32 at a time for the loss: 1024 × a 128k vocabulary is 0.5 GB, never batch × seq × vocab."""


Scored = tuple[list[int], int]
"""A held-out conversation's tokens under the chat template and the index of its first scored (completion) token."""


def render(tokenizer: Any, conversations: Sequence[Conversation], *, max_length: int) -> list[Scored]:
    """Each conversation rendered with the tokenizer's chat template, cut to `max_length` tokens, with the start of its
    completion: the loss is taken on the completion tokens (closing end-of-turn token included), as trained."""
    if not tokenizer.chat_template:
        raise DataError(
            f"the candidate's tokenizer ({tokenizer.name_or_path}) has no chat template, so its prompt format is "
            "unknown; train it with the crucible (which saves the template it trained with) or add one"
        )
    # each turn cut before rendering (truncation keeps the start, so the tokens are the same): a 50 MB test record is
    # never tokenized whole
    limit = max_length * CHARS_PER_TOKEN_BOUND
    scored = []
    for c in conversations:
        prompt, completion = (
            [{**t, "content": t["content"][:limit]} for t in turns] for turns in (c.prompt, c.completion)
        )
        ids, start = completion_ids(tokenizer, prompt, completion)
        scored.append((ids[:max_length], start))
    return scored


def stop_tokens(tokenizer: Any) -> list[int]:
    """The template's end-of-turn token (where a trained answer ends; empty when the template has none): with
    ``<|eot_id|>`` closing turns, a model that is not stopped there runs on into a next turn's header."""
    turn = end_of_turn(tokenizer)
    return [turn.token_id] if turn else []


def prompt_texts(tokenizer: Any, prompts: Sequence[Messages]) -> list[str]:
    """Each prompt as the model is given it: `apply_chat_template(prompt, add_generation_prompt=True)`."""
    return [render_text(tokenizer, p, generation_prompt=True) for p in prompts]


def token_loss(
    model: Any, tokenizer: Any, items: Sequence[Scored], *, batch_size: int, batch_tokens: int
) -> float:
    """Mean next-token negative log-likelihood of a loaded model over the scored tokens of `items` (token-weighted)."""
    import torch
    import torch.nn.functional as F

    pad = pad_id(tokenizer)
    # the first token is never predicted; an item with no scored token left after the cut counts for nothing
    spans = [(ids, max(start, 1)) for ids, start in items if len(ids) > max(start, 1)]
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches([len(ids) for ids, _ in spans], batch_size, batch_tokens):
            rows = [spans[i] for i in batch]
            width = len(rows[0][0])
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for row, (ids, _) in enumerate(rows):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, : len(ids)] = 1
            input_ids, attention = input_ids.to(model.device), attention.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            # The logits stay in the model's dtype (bf16 on a GPU); each row's scored positions are upcast to float32
            # in chunks of LOSS_CHUNK_TOKENS for the cross-entropy, so float32 logits never exist for the whole
            # batch × seq × vocab (16 GB at 32 × 512 × 128k), and neither prompt nor padding is scored. The sum is
            # kept in float64 on the device and read once per batch (one sync, not one per chunk).
            nll = torch.zeros((), dtype=torch.float64, device=logits.device)
            for row, (ids, first) in enumerate(rows):
                for start in range(first - 1, len(ids) - 1, LOSS_CHUNK_TOKENS):
                    stop = min(start + LOSS_CHUNK_TOKENS, len(ids) - 1)
                    chunk = F.cross_entropy(
                        logits[row, start:stop].float(), input_ids[row, start + 1 : stop + 1], reduction="sum"
                    )
                    nll += chunk.double()
            total_nll += float(nll)
            total_tokens += sum(len(ids) - first for ids, first in rows)
            del logits
    if total_tokens == 0:
        raise DataError(
            f"none of the {len(items)} held-out conversations has a completion token to score within max_length"
        )
    return total_nll / total_tokens


def heldout_loss(
    model_dir: Path,
    conversations: list[Conversation],
    *,
    max_length: int = 512,
    batch_size: int | None = None,
    device: str = "cpu",
) -> float:
    """Mean next-token negative log-likelihood over the completion tokens of `conversations` rendered with the model's
    chat template (token-weighted), in eval mode.

    `device` is "cpu", "cuda" or "auto" (as `compute.device`); `batch_size` defaults by device (BATCH_SIZES).
    """
    if not conversations:
        raise DataError("heldout_loss got no conversations; give at least one held-out conversation")
    resolved = resolve_device(device)
    sizes = BATCH_SIZES[resolved]
    model, tokenizer = load_model(Path(model_dir), resolved, model_dtype(Path(model_dir), resolved))
    try:
        return token_loss(
            model,
            tokenizer,
            render(tokenizer, conversations, max_length=max_length),
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
    stop_ids: Sequence[int] = (),
) -> list[str]:
    """Greedy answers to rendered `prompts` (`prompt_texts`) in their order (left-padded batches of similar length on
    the model's device), each cut at its first line break. The template supplies any BOS, so none is added;
    generation stops at the eos_token or any of `stop_ids` (the template's end-of-turn token, `stop_tokens`)."""
    import torch

    answers = [""] * len(prompts)
    pad = pad_id(tokenizer)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
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
                eos_token_id=sorted({tokenizer.eos_token_id, *stop_ids}),
            )
            for index, generated in zip(batch, out[:, width:].tolist(), strict=True):
                text = tokenizer.decode(generated, skip_special_tokens=True)
                answers[index] = text.strip().split("\n", 1)[0].strip()
    return answers


_PUNCT_EDGES = " \t\"'`.,;:!?()[]{}"


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation and quotes: "  Yes. " → "yes"."""
    return " ".join(text.lower().split()).strip(_PUNCT_EDGES)
