"""One contamination definition: what the curator decontaminates is what the exam finds clean (issue 13)."""

import json
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.curator.contamination import contamination, contamination_text
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.formats import render_prompt
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
    which the template's "### Response:" header between them turns into a shared 13-gram."""
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


def test_header_words_never_complete_an_n_gram() -> None:
    a, b = templated_rows()[:2]
    rendered = [render_prompt(r["instruction"]) + r["output"] for r in (a, b)]
    assert "response" not in contamination_text(rendered[0]).lower()
    assert contamination(rendered[:1], rendered[1:], 13).contaminated == []
    story = [render_prompt(r["instruction"]) + r["output"] for r in templated_rows()[-2:]]
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
