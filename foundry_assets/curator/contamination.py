"""The one contamination definition the curator and the exam share: which text is compared, and how.

A training example and a test item are compared on their content (`content_text`: the contents of the turns a model
trains on or is scored on, joined by newlines: an sft example's prompt and completion, a preference example's prompt
and chosen answer), never on template text, then normalised and cut into n-grams by `decontam.ngram_overlap`. Markup
that is the same in every example (a chat template's role headers, the old ``### Response:`` lines) let a header word
complete an n-gram that no record's content holds: "… answer in one sentence ### Response: Sure, here is …" matched
across unrelated records, and the exam found 4.8% of a drop's test items contaminated right after the curator, which
compared the raw fields, had decontaminated it. The curated rows hold turns, not rendered text, so there is no markup
to strip; both stages call `contamination` on `content_text` of the same rows.
"""

from collections.abc import Sequence
from typing import Any

from foundry_assets.curator.decontam import OverlapReport, ngram_overlap
from foundry_assets.errors import DataError

_SCORED_KEYS = ("prompt", "completion", "chosen")


def content_text(example: dict[str, Any]) -> str:
    """What a curated row is compared on: the contents of its prompt and completion (or chosen answer) turns."""
    if "prompt" not in example or not ("completion" in example or "chosen" in example):
        raise DataError(
            f"not a training example (keys: {', '.join(sorted(example))}); expected 'prompt' and 'completion' "
            "(sft) or 'prompt', 'chosen' and 'rejected' (preference); curate the drop again with this version"
        )
    return "\n".join(turn["content"] for key in _SCORED_KEYS for turn in example.get(key, []))


def contamination(
    train_texts: Sequence[str], test_texts: Sequence[str], n: int, *, find_train: bool = False
) -> OverlapReport:
    """Test items sharing a normalised n-gram of content with a training text (and, with `find_train`, the training
    items sharing one with a test item): the curator's decontamination and the exam's gate, one definition."""
    return ngram_overlap(list(train_texts), list(test_texts), n=n, find_train=find_train)
