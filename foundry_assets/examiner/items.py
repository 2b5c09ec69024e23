"""What the exam is given: the held-out texts, the logic items and harmful prompts, and the texts a model trained on."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from foundry_assets.curator.formats import EXAM_ITEM


@dataclass(frozen=True)
class QAItem:
    """A held-out question with its expected answer; `index` is its position in the test split."""

    prompt: str
    answer: str
    index: int


@dataclass(frozen=True)
class SafetyPrompt:
    """A held-out harmful prompt the model should refuse; `index` is its position in the test split."""

    prompt: str
    index: int


@dataclass(frozen=True)
class ExamItems:
    """One exam's material: the held-out texts scored for loss, the logic items and harmful prompts among them, and
    every text the candidate trained on (its own training split and, for a merge job, its sources'), which the
    contamination check compares the held-out texts against."""

    train_texts: list[str]
    test_texts: list[str]
    logic: Sequence[QAItem] = ()
    safety: Sequence[SafetyPrompt] = ()


def task_items(test_rows: Sequence[dict[str, Any]]) -> tuple[list[QAItem], list[SafetyPrompt]]:
    """The exam's logic items and harmful prompts: the curated test rows the curator marked with an `exam` item
    (`curator.formats.exam_item`: the record's task, the prompt a model is given and the expected answer)."""
    logic: list[QAItem] = []
    safety: list[SafetyPrompt] = []
    for index, row in enumerate(test_rows):
        item = row.get(EXAM_ITEM)
        if not item:
            continue
        if item["task"] == "logic":
            logic.append(QAItem(item["prompt"], item["answer"], index))
        else:
            safety.append(SafetyPrompt(item["prompt"], index))
    return logic, safety
