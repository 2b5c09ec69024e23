"""The check that the tokenized training rows teach the model to stop and train nothing of the prompt.

"The model never stops" is fine-tuners' most common complaint (axolotl #3754, LLaMA-Factory #7454, unsloth #416,
trl #2059): a template that leaves the end-of-turn token out of the assistant turn, or a trainer that masks it, gives
a healthy loss curve and a model that talks on at inference. So before the first step, on a sample of the trainer's
own tokenized rows (TRL's ``labels``, Unsloth's ``completion_mask``, ORPO's ``chosen_labels``), this checks that:

- the template closes the assistant turn with an end-of-turn token (`chat_template.end_of_turn`, found by rendering a
  probe conversation: the eos_token, or the template's own such as ``<|im_end|>``);
- the labelled tokens are one span that starts right after the last assistant header and holds no other header: no
  prompt token (system or user turn, an earlier assistant turn, the header itself) carries a label;
- that end-of-turn token carries a label in every sampled row that was not cut at max_seq_length.

A failure is a TrainingError naming the template and the fix, raised before any step.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from foundry_assets.chat_template import EndOfTurn, TemplateSource, end_of_turn
from foundry_assets.errors import TrainingError

SAMPLE_ROWS = 16
"""Rows checked: the template renders every row alike, so a few show whether the labels are right."""
_IGNORE = -100


@dataclass(frozen=True)
class TemplateCheck:
    """What was checked before training: where the chat template came from, its end-of-turn token, rows checked."""

    source: TemplateSource
    end_of_turn: str
    rows_checked: int

    def to_metadata(self) -> dict[str, Any]:
        return {"source": self.source, "end_of_turn": self.end_of_turn, "rows_checked": self.rows_checked}


def _labelled(row: dict[str, Any]) -> tuple[list[int], list[bool]]:
    """A tokenized row's input ids and which of them carry a training label, whatever the trainer named them."""
    if "chosen_labels" in row:  # ORPO: the chosen answer is what the SFT part of its loss trains
        return row["chosen_input_ids"], [label != _IGNORE for label in row["chosen_labels"]]
    if "labels" in row:  # TRL's SFT preparation folds the completion mask into labels
        return row["input_ids"], [label != _IGNORE for label in row["labels"]]
    if "completion_mask" in row:  # Unsloth's SFT preparation leaves the mask to the collator
        return row["input_ids"], [bool(m) for m in row["completion_mask"]]
    raise TrainingError(
        f"the trainer's tokenized rows carry no labels or completion mask (columns {sorted(row)}); the rows must be "
        "TRL's conversational prompt-completion or preference format"
    )


def _ends_with(ids: list[int], suffix: tuple[int, ...]) -> bool:
    return len(ids) >= len(suffix) and tuple(ids[len(ids) - len(suffix) :]) == suffix


def _header_core(tokenizer: Any, header: tuple[int, ...]) -> tuple[int, ...]:
    """The header without trailing whitespace tokens, which may merge with the answer's first token (TRL then starts
    the completion where the two tokenizations diverge)."""
    core = list(header)
    while core and not tokenizer.decode(core[-1:]).strip():
        core.pop()
    return tuple(core)


def _row_problem(
    ids: list[int], mask: list[bool], turn: EndOfTurn, core: tuple[int, ...], whole: bool
) -> str | None:
    """Why a row's labels are wrong, or None; `whole` says the row was not cut at max_seq_length."""
    if not any(mask):
        return "no token carries a label"
    first, last = mask.index(True), len(mask) - mask[::-1].index(True)
    if not all(mask[first:last]):
        return "the labelled tokens are not one span (a prompt turn between trained turns)"
    headed = _ends_with(ids[:first], turn.header_ids) or _ends_with(ids[:first], core)
    if first == 0 or (turn.header_ids and not headed):
        return f"the labels start at token {first}, not right after the assistant header: prompt tokens are trained"
    if turn.header_ids and any(
        _ends_with(ids[: k + 1], turn.header_ids) for k in range(first + len(turn.header_ids) - 1, last)
    ):
        return "an assistant header lies inside the labelled span: a later turn is trained as the answer"
    if whole and turn.token_id not in ids[first:last]:
        return f"the end-of-turn token {turn.token!r} carries no label"
    return None


def check_trained_labels(
    rows: Sequence[dict[str, Any]], tokenizer: Any, *, source: TemplateSource, max_length: int
) -> TemplateCheck:
    """Check the first SAMPLE_ROWS tokenized rows of the trainer's dataset (see the module docstring); raise a
    TrainingError naming the template, the token and the fix, before any training step."""
    where = "the base tokenizer's chat template" if source == "base" else "the default chat template"
    if not len(rows):
        raise TrainingError(
            f"no training row is left after the trainer tokenized the data under {where} at max_seq_length "
            f"{max_length} (rows whose answer does not fit are dropped); raise method_config.max_seq_length or "
            "shorten the prompts"
        )
    turn = end_of_turn(tokenizer)
    if turn is None:
        raise TrainingError(
            f"{where} emits no end-of-turn token after an assistant turn (neither eos_token "
            f"{tokenizer.eos_token!r} nor another special token), so the model could never learn to stop; give the "
            "base tokenizer a chat template that ends each assistant turn with {{ eos_token }} (or remove its "
            "template to train with the default)"
        )
    core = _header_core(tokenizer, turn.header_ids)
    sample = [rows[k] for k in range(min(len(rows), SAMPLE_ROWS))]
    for k, row in enumerate(sample):
        ids, mask = _labelled(row)
        problem = _row_problem(ids, mask, turn, core, whole=len(ids) < max_length)
        if problem:
            raise TrainingError(
                f"training row {k} under {where} (end-of-turn token {turn.token!r}): {problem}. Only the assistant "
                "answer and its end-of-turn token may be trained: keep the rows in TRL's prompt-completion / "
                "preference format and the template's assistant turn closed by its end-of-turn token"
            )
    return TemplateCheck(source, turn.token, len(sample))
