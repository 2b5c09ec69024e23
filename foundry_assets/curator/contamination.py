"""The one contamination definition the curator and the exam share: which text is compared, and how.

A training example and a test item are compared on their content: the text a model trains on or is scored on
(`formats.eval_text`: an sft example's rendered text, a preference example's prompt and chosen answer) with the
template's header lines (``### Instruction:``, ``### Input:``, ``### Response:``, ``### System:``) removed, then
normalised and cut into n-grams by `decontam.ngram_overlap`. The headers are the same in every example, so keeping them
let a header word complete an n-gram that no record's content holds: "… answer in one sentence ### Response: Sure,
here is …" matched across unrelated records, and the exam found 4.8% of a drop's test items contaminated right after
the curator, which compared the raw fields, had decontaminated it. Both now call `contamination` on the same texts;
a content line that is exactly a header is removed too, on both sides alike.
"""

import re
from collections.abc import Sequence

from foundry_assets.curator.decontam import OverlapReport, ngram_overlap
from foundry_assets.curator.formats import INPUT_HEADER, ROLE_HEADERS

_HEADERS = sorted({*ROLE_HEADERS.values(), INPUT_HEADER})
_HEADER_LINE = re.compile(r"^(?:" + "|".join(map(re.escape, _HEADERS)) + r")[ \t]*$", flags=re.MULTILINE)


def contamination_text(text: str) -> str:
    """`text` as the contamination check reads it: the template's header lines removed (the content stays)."""
    return _HEADER_LINE.sub("", text) if "###" in text else text


def contamination(
    train_texts: Sequence[str], test_texts: Sequence[str], n: int, *, find_train: bool = False
) -> OverlapReport:
    """Test items sharing a normalised n-gram of content with a training text (and, with `find_train`, the training
    items sharing one with a test item): the curator's decontamination and the exam's gate, one definition."""
    return ngram_overlap(
        [contamination_text(t) for t in train_texts],
        [contamination_text(t) for t in test_texts],
        n=n,
        find_train=find_train,
    )
