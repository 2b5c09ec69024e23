"""Scoring one model on real tiny models: token-weighted held-out loss, batch-independent loss and greedy answers."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.crucible.preconditions import CHARS_PER_TOKEN_BOUND
from foundry_assets.curator.formats import render_prompt
from foundry_assets.errors import DataError
from foundry_assets.examiner import scoring
from foundry_assets.examiner.models import load_model
from foundry_assets.examiner.scoring import generate_answers, heldout_loss, normalize_answer
from foundry_assets_tests.examiner.texts import HARMFUL, LOGIC, NAMES, TRAIN_TEXTS, VARIED_TEXTS

pytestmark = pytest.mark.slow


def test_heldout_loss_is_lower_after_training_on_the_texts(tiny_model_dir: Path, trained_dir: Path) -> None:
    base = heldout_loss(tiny_model_dir, TRAIN_TEXTS)
    trained = heldout_loss(trained_dir, TRAIN_TEXTS)
    assert math.isfinite(base) and trained < base - 1.0
    assert math.log(len(AutoTokenizer.from_pretrained(str(tiny_model_dir)))) == pytest.approx(base, rel=0.1)


def test_heldout_loss_is_token_weighted_and_batch_independent(trained_dir: Path) -> None:
    texts = ["Hi.", "Question: what is seven plus one? Answer: eight, as every child knows by now."]
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    model = AutoModelForCausalLM.from_pretrained(str(trained_dir), dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    assert heldout_loss(trained_dir, texts, batch_size=8) == pytest.approx(total / count, rel=1e-5)
    assert heldout_loss(trained_dir, texts, batch_size=1) == pytest.approx(total / count, rel=1e-5)
    assert heldout_loss(trained_dir, texts, max_length=3) != pytest.approx(total / count, rel=1e-3)


def test_normalize_answer() -> None:
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer('"No!"') == "no"
    assert normalize_answer("Cannot   tell") == "cannot tell"
    assert normalize_answer("3.5") == "3.5"


# --- batching that changes nothing but speed ------------------------------------------------------------------------


def test_batched_loss_equals_the_unbatched_loss_for_very_different_lengths(
    trained_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    lengths = sorted(len(tokenizer(t)["input_ids"]) for t in VARIED_TEXTS)
    assert lengths[0] < 2 and lengths[-1] > 20 * lengths[1]  # one unscoreable text, and a 20× spread
    one_by_one = heldout_loss(trained_dir, VARIED_TEXTS, batch_size=1)
    assert heldout_loss(trained_dir, VARIED_TEXTS, batch_size=4) == pytest.approx(one_by_one, abs=1e-5)
    assert heldout_loss(trained_dir, VARIED_TEXTS) == pytest.approx(
        one_by_one, abs=1e-5
    )  # by-device defaults
    monkeypatch.setattr(scoring, "LOSS_CHUNK_TOKENS", 3)  # every row's cross-entropy in many float32 chunks
    assert heldout_loss(trained_dir, VARIED_TEXTS, batch_size=8) == pytest.approx(one_by_one, abs=1e-5)


def test_batched_greedy_answers_equal_one_at_a_time_in_the_original_order(trained_dir: Path) -> None:
    model, tokenizer = load_model(trained_dir, "cpu", torch.float32)
    prompts = [
        *(item.prompt for item in LOGIC),
        render_prompt("What is 8 plus 0?"),
        render_prompt(" ".join(f"{n} said hello to the quick brown fox." for n in NAMES)),
        *(p.prompt for p in HARMFUL),
        "Question: what is 1 plus 2? Answer:",
    ]
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert len(set(alone)) > 1  # distinct answers, so a reordering would show
    for batch_size in (1, 3, 16):
        assert generate_answers(model, tokenizer, prompts, max_new_tokens=8, batch_size=batch_size) == alone


def test_a_huge_test_record_is_cut_before_the_tokenizer_sees_it() -> None:
    """A 50 MB held-out text costs what max_length tokens cost: the tokenizer is handed a bounded prefix."""
    seen: list[int] = []

    def tokenizer(text: str, **_: object) -> dict[str, list[int]]:
        seen.append(len(text))
        return {"input_ids": [7]}  # one token: nothing to score, so no model is needed

    tokenizer.pad_token_id = 0  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="nothing to score"):
        scoring.token_loss(
            None, tokenizer, ["x" * 50_000_000, "short"], max_length=512, batch_size=1, batch_tokens=1
        )
    assert seen == [512 * CHARS_PER_TOKEN_BOUND, 5]
