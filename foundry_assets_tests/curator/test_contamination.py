"""One contamination definition: what the curator decontaminates is what the exam finds clean (issue 13)."""

import json
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.curator.contamination import contamination, content_text
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.formats import Record, to_training_example
from foundry_assets.curator.pipeline import curate_drop
from foundry_assets.examiner.exam import examine
from foundry_assets.examiner.stage import exam_items
from foundry_assets.manifest import ExamConfig
from foundry_assets.stages import MergedModel
from foundry_assets_tests.curator.synthetic import TOPICS

pytestmark = pytest.mark.slow
STORY = "once upon a time a small fox lived at the edge of a quiet green forest near the river"


def templated_rows() -> list[dict[str, Any]]:
    """Records whose instruction ends and whose output starts with the same six words: 12 shared words of content,
    which a template's role header between them (the old "### Response:") would turn into a shared 13-gram."""
    rows: list[dict[str, Any]] = [
        {
            "instruction": f"Tell me about {topic}, case {i}; answer the question in full detail",
            "output": f"Sure here is the complete answer: {i} concerns {topic}.",
        }
        for i, topic in enumerate(TOPICS * 2)
    ]
    rows += [  # a real 13-gram of content shared by six records: what decontamination must remove
        {
            "instruction": f"Variant {i}: {STORY}. What happened next in chapter {i}?",
            "output": f"Chapter {i} ends.",
        }
        for i in range(6)
    ]
    return rows


def contents(rows: list[dict[str, Any]]) -> list[str]:
    return [content_text(to_training_example(Record(k, "alpaca", r), "sft")) for k, r in enumerate(rows)]


def test_only_content_is_compared_so_no_header_completes_an_n_gram() -> None:
    a, b = contents(templated_rows()[:2])
    topic = TOPICS[0]
    assert a == f"Tell me about {topic}, case 0; answer the question in full detail\n" + (
        f"Sure here is the complete answer: 0 concerns {topic}."
    )
    assert contamination([a], [b], 13).contaminated == []
    story = contents(templated_rows()[-2:])
    assert contamination(story[:1], story[1:], 13).contaminated == [0]


def test_what_the_curator_decontaminated_the_exam_finds_clean(
    tmp_path: Path, tiny_model_dir: Path, embedder: MiniLMEmbedder
) -> None:
    drop = tmp_path / "d.jsonl"
    drop.write_text("".join(json.dumps(r) + "\n" for r in templated_rows()), encoding="utf-8")
    curated = curate_drop(
        drop,
        tmp_path / "out",
        data_format="sft",
        embedder=embedder,
        threshold=0.999,
        test_fraction=0.3,
        decontaminate_train=True,
    )
    assert curated.overlap is not None and curated.train_decontaminated > 0
    story_lines = set(range(len(TOPICS) * 2 + 1, len(TOPICS) * 2 + 7))
    test_lines = [json.loads(x)["source_line"] for x in curated.test_path.read_text().splitlines()]
    assert {test_lines[i] for i in curated.overlap.contaminated} <= story_lines  # only the real 13-gram
    assert any(line not in story_lines for line in test_lines)  # templated records were held out too

    merged = MergedModel(curated.dataset("lot").lot_number, tiny_model_dir, "base", "fold", "cpu", "float32")
    items = exam_items(curated.dataset("lot"), merged)
    report = examine(
        tiny_model_dir, tiny_model_dir, items, ExamConfig(max_contamination=0.0, max_eval_items=2)
    )
    assert report.contamination["contaminated"] == [] and report.metric("contaminated_fraction").passed
