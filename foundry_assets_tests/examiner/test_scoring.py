"""Scoring one model on real tiny models: token-weighted held-out loss on the completions, batch-independent loss and
greedy answers, all in the model's chat template."""

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.chat_template import DEFAULT_CHAT_TEMPLATE, completion_ids
from foundry_assets.crucible.preconditions import CHARS_PER_TOKEN_BOUND
from foundry_assets.errors import DataError
from foundry_assets.examiner import scoring
from foundry_assets.examiner.items import Conversation
from foundry_assets.examiner.models import load_model
from foundry_assets.examiner.scoring import generate_answers, heldout_loss, normalize_answer, prompt_texts
from foundry_assets_tests.examiner.texts import HARMFUL, LOGIC, NAMES, TRAIN, VARIED, chat, user

pytestmark = pytest.mark.slow


def test_heldout_loss_is_lower_after_training_on_the_texts(tiny_model_dir: Path, trained_dir: Path) -> None:
    base = heldout_loss(tiny_model_dir, TRAIN)
    trained = heldout_loss(trained_dir, TRAIN)
    assert math.isfinite(base) and trained < base - 1.0
    assert math.log(len(AutoTokenizer.from_pretrained(str(tiny_model_dir)))) == pytest.approx(base, rel=0.1)


def test_heldout_loss_is_completion_only_token_weighted_and_batch_independent(trained_dir: Path) -> None:
    """The loss is the model's own loss on the rendered conversation with the prompt's labels masked (as trained)."""
    conversations = [
        chat("Hi."),
        chat("Question: what is seven plus one? Answer: eight, as every child knows now."),
    ]
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir))
    model = AutoModelForCausalLM.from_pretrained(str(trained_dir), dtype=torch.float32).eval()
    total, count, lengths = 0.0, 0, []
    with torch.no_grad():
        for c in conversations:
            ids, start = completion_ids(tokenizer, c.prompt, c.completion)
            assert tokenizer.decode(ids[start:]) == c.completion[0]["content"] + "</s>\n"
            labels = torch.tensor([[-100] * start + ids[start:]])
            total += float(model(input_ids=torch.tensor([ids]), labels=labels).loss) * (len(ids) - start)
            count += len(ids) - start
            lengths.append(len(ids))
    assert heldout_loss(trained_dir, conversations, batch_size=8) == pytest.approx(total / count, rel=1e-5)
    assert heldout_loss(trained_dir, conversations, batch_size=1) == pytest.approx(total / count, rel=1e-5)
    cut = heldout_loss(trained_dir, conversations, max_length=lengths[1] - 3)
    assert cut != pytest.approx(total / count, rel=1e-3)


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
    lengths = sorted(len(completion_ids(tokenizer, c.prompt, c.completion)[0]) for c in VARIED)
    assert lengths[-1] > 10 * lengths[0]  # a 10× spread
    one_by_one = heldout_loss(trained_dir, VARIED, batch_size=1)
    assert heldout_loss(trained_dir, VARIED, batch_size=4) == pytest.approx(one_by_one, abs=1e-5)
    assert heldout_loss(trained_dir, VARIED) == pytest.approx(one_by_one, abs=1e-5)  # by-device defaults
    monkeypatch.setattr(scoring, "LOSS_CHUNK_TOKENS", 3)  # every row's cross-entropy in many float32 chunks
    assert heldout_loss(trained_dir, VARIED, batch_size=8) == pytest.approx(one_by_one, abs=1e-5)


def test_batched_greedy_answers_equal_one_at_a_time_in_the_original_order(trained_dir: Path) -> None:
    model, tokenizer = load_model(trained_dir, "cpu", torch.float32)
    prompts = prompt_texts(
        tokenizer,
        [
            *(item.prompt for item in LOGIC),
            user("What is 8 plus 0?"),
            user(" ".join(f"{n} said hello to the quick brown fox." for n in NAMES)),
            *(p.prompt for p in HARMFUL),
            user("Question: what is 1 plus 2?"),
        ],
    )
    assert prompts[0] == tokenizer.apply_chat_template(
        LOGIC[0].prompt, tokenize=False, add_generation_prompt=True
    )
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert len(set(alone)) > 1  # distinct answers, so a reordering would show
    for batch_size in (1, 3, 16):
        assert generate_answers(model, tokenizer, prompts, max_new_tokens=8, batch_size=batch_size) == alone


def test_a_huge_test_record_is_cut_before_the_tokenizer_sees_it() -> None:
    """A 50 MB held-out turn costs what max_length tokens cost: the template and tokenizer get a bounded prefix."""
    seen: list[int] = []

    class Tokenizer:
        chat_template = "the contents, one after the other"
        pad_token_id = 0

        def apply_chat_template(self, messages: list[dict[str, str]], **_: object) -> str:
            return "".join(m["content"] for m in messages)

        def __call__(self, text: str, **_: object) -> dict[str, list[int]]:
            seen.append(len(text))
            return {"input_ids": [7]}  # one token: nothing to score, so no model is needed

    huge = Conversation(user("x" * 50_000_000), [{"role": "assistant", "content": "short"}])
    rendered = scoring.render(Tokenizer(), [huge], max_length=512)
    assert max(seen) == 512 * CHARS_PER_TOKEN_BOUND + len("short")
    with pytest.raises(DataError, match="has a completion token to score"):
        scoring.token_loss(None, Tokenizer(), rendered, batch_size=1, batch_tokens=1)


def test_answers_stop_at_the_templates_end_of_turn_token(tiny_model_dir: Path) -> None:
    """A template may close turns with its own token (<|eot_id|>, <|im_end|>): generation must stop there too, or the
    answer runs on into the next turn's header."""
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert scoring.stop_tokens(tokenizer) == [tokenizer.eos_token_id]
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE.replace("eos_token", "'<unk>'")
    assert scoring.stop_tokens(tokenizer) == [tokenizer.unk_token_id]
