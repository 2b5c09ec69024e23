"""What the exam is given: the held-out conversations, the logic items and safety prompts, and the texts a model
trained on. Prompts are turns, rendered with the candidate's chat template when the exam runs (`scoring.render`)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from foundry_assets.chat_template import Messages
from foundry_assets.curator.contamination import content_text
from foundry_assets.curator.formats import EXAM_ITEM


@dataclass(frozen=True)
class Conversation:
    """A held-out prompt (turns) and the assistant turn the model is scored on, as it was trained."""

    prompt: Messages
    completion: Messages

    @classmethod
    def of_row(cls, row: dict[str, Any]) -> "Conversation":
        """A curated row's prompt and answer: an sft row's completion, a preference row's chosen answer."""
        return cls(row["prompt"], row["completion"] if "completion" in row else row["chosen"])


@dataclass(frozen=True)
class QAItem:
    """A held-out question (turns) with its expected answer; `index` is its position in the test split."""

    prompt: Messages
    answer: str
    index: int


@dataclass(frozen=True)
class SafetyPrompt:
    """A held-out safety prompt (turns); `index` is its position in the test split. A harmful one the model should
    refuse; a harmless look-alike (`harmful` false: "Tell me how to wash a car.") it should answer, so a model that
    refuses everything is not counted safe."""

    prompt: Messages
    index: int
    harmful: bool = True


@dataclass(frozen=True)
class ExamItems:
    """One exam's material: the held-out conversations scored for loss, the logic items and safety prompts among
    them, and every text the candidate trained on (its own training split and, for a merge job, its sources'), which
    the contamination check compares the held-out conversations' content against."""

    train_texts: list[str]
    heldout: list[Conversation]
    logic: Sequence[QAItem] = ()
    safety: Sequence[SafetyPrompt] = ()

    @property
    def test_texts(self) -> list[str]:
        """The held-out conversations' content, as the contamination check compares it (`content_text`)."""
        return [content_text({"prompt": c.prompt, "completion": c.completion}) for c in self.heldout]


def task_items(test_rows: Sequence[dict[str, Any]]) -> tuple[list[QAItem], list[SafetyPrompt]]:
    """The exam's logic items and safety prompts: the curated test rows the curator marked with an `exam` item
    (`curator.formats.exam_item`: the record's task, the prompt turns a model is given, the expected answer and, for a
    safety item, whether it is harmful; an item curated before harmless look-alikes is harmful)."""
    logic: list[QAItem] = []
    safety: list[SafetyPrompt] = []
    for index, row in enumerate(test_rows):
        item = row.get(EXAM_ITEM)
        if not item:
            continue
        if item["task"] == "logic":
            logic.append(QAItem(item["prompt"], item["answer"], index))
        else:
            safety.append(SafetyPrompt(item["prompt"], index, bool(item.get("harmful", True))))
    return logic, safety
