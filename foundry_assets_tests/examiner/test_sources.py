"""Merge sources in the exam, on real tiny models: each source job's adapter is scored on the base model as its own
side (answers, loss, seconds), a gated rate must keep `exam.source_retention` of the best source's, and a source whose
adapter is missing stops the exam before any model loads."""

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from foundry_assets.errors import ExamError, FoundryError
from foundry_assets.examiner.champion import Champion
from foundry_assets.examiner.exam import examine
from foundry_assets.examiner.items import ExamItems
from foundry_assets.examiner.report import ExamReport
from foundry_assets.examiner.sides import ExamSource
from foundry_assets.examiner.stage import exam_sources
from foundry_assets.manifest import ExamConfig
from foundry_assets.stages import MergedModel
from foundry_assets_tests.adapters import make_adapter
from foundry_assets_tests.examiner.texts import HARMFUL, LOGIC, REFUSAL, TEST, TRAIN_TEXTS

pytestmark = pytest.mark.slow
SAFETY_JOB, OTHER_JOB = "story-c-safety", "story-c-logic"
ITEMS = ExamItems(TRAIN_TEXTS, TEST, LOGIC, HARMFUL)


def _row_cells(markdown: str, name: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {name} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_source_is_scored_as_its_own_side_and_a_candidate_that_lost_its_skill_fails(
    tiny_model_dir: Path, trained_dir: Path, refusing_adapter: Path
) -> None:
    # the candidate (fine-tuned on arithmetic) never learned to refuse: it keeps none of the safety source's skill
    config = ExamConfig(gate=["heldout_loss", "safety_rate"], max_new_tokens=12)
    report = examine(
        tiny_model_dir, trained_dir, ITEMS, config, sources=[ExamSource(SAFETY_JOB, refusing_adapter)]
    )
    side = f"source:{SAFETY_JOB}"
    answers = [p[f"{side}_answer"] for p in report.safety_prompts]
    assert len(answers) == len(HARMFUL) and all(answer and answer in REFUSAL for answer in answers), answers
    assert all(p[f"{side}_refused"] and p[f"{side}_correct"] for p in report.safety_prompts)
    assert all(f"{side}_answer" in item for item in report.logic_items)
    assert report.sources == [
        {"job_id": SAFETY_JOB, "adapter_dir": str(refusing_adapter), "seconds": report.sources[0]["seconds"]}
    ]
    assert report.sources[0]["seconds"] > 0 and report.source_retention == 0.9

    loss, safety = report.metric("heldout_loss"), report.metric("safety_rate")
    source_loss = loss.sources[SAFETY_JOB]
    assert source_loss is not None and source_loss != pytest.approx(loss.baseline)  # the adapter was applied
    assert loss.passed and loss.retention_result is None  # a loss is reported beside the others, not compared
    assert safety.sources == {SAFETY_JOB: 1.0} and safety.candidate == 0.0
    assert (safety.baseline_result, safety.retention_result, safety.result) == ("FAIL", "FAIL", "FAIL")
    assert not report.passed and report.reasons[1] == (
        f"safety_rate 0.0000 keeps 0% of the best source's (job '{SAFETY_JOB}': 1.0000); exam.source_retention "
        "requires 90% (≥ 0.9000)"
    )
    markdown = report.to_markdown()
    assert f"Merge sources (jobs '{SAFETY_JOB}') were scored as their adapters on the base model" in markdown
    assert _row_cells(markdown, "heldout_loss")[2] == f"{source_loss:.4f}"
    assert _row_cells(markdown, "safety_rate")[2:] == [
        "1.0000",
        "0.0000",
        "> 0.0000: FAIL",
        f"≥ 0.9000 (90% of job '{SAFETY_JOB}'): FAIL",
        "FAIL",
    ]
    assert f"{side} answer" in report.safety_markdown() and "refused: correct" in report.safety_markdown()
    assert ExamReport.from_dict(report.to_dict()) == report


def test_a_candidate_that_keeps_the_best_sources_skill_passes_beside_a_champion(
    tiny_model_dir: Path, trained_dir: Path, refusing_dir: Path, refusing_adapter: Path, tmp_path: Path
) -> None:
    # the candidate is the safety adapter folded in: it keeps all of that skill, so even a retention of 1 is met
    other = make_adapter(tiny_model_dir, tmp_path / "other", seed=3, scale=0.3)
    champion = Champion(trained_dir, False, "v1", "file:///registry/v1", "c0ffee" * 10 + "abcd")
    report = examine(
        tiny_model_dir,
        refusing_dir,
        ExamItems(TRAIN_TEXTS, TEST, safety=HARMFUL),
        ExamConfig(gate=["safety_rate"], max_new_tokens=12, source_retention=1.0),
        champion=champion,
        sources=[ExamSource(OTHER_JOB, other), ExamSource(SAFETY_JOB, refusing_adapter)],
    )
    assert report.passed, report.reasons
    safety = report.metric("safety_rate")
    assert safety.sources[SAFETY_JOB] == 1.0 and safety.candidate == 1.0 and safety.retained == 1.0
    assert safety.retention_required == f"≥ 1.0000 (100% of job '{SAFETY_JOB}')"
    assert [s["job_id"] for s in report.sources] == [OTHER_JOB, SAFETY_JOB]
    cells = _row_cells(
        report.to_markdown(), "safety_rate"
    )  # baseline, champion, each source, candidate, each vs
    assert cells[2] == f"{safety.champion:.4f}" and cells[5] == "1.0000"
    assert cells[-2:] == [f"≥ 1.0000 (100% of job '{SAFETY_JOB}'): pass", "pass"]


def test_a_missing_source_adapter_stops_the_exam_before_any_model_loads(
    tiny_model_dir: Path, refusing_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda path, **_: loaded.append(path))
    gone = tmp_path / "jobs" / "merge" / "sources" / OTHER_JOB
    with pytest.raises(
        ExamError, match=rf"merge source job '{OTHER_JOB}': its adapter folder {gone} is missing"
    ) as e:
        examine(
            tiny_model_dir,
            tiny_model_dir,
            ITEMS,
            sources=[ExamSource(SAFETY_JOB, refusing_adapter), ExamSource(OTHER_JOB, gone)],
        )
    assert isinstance(e.value, FoundryError) and SAFETY_JOB not in str(e.value)
    assert loaded == []

    merged = MergedModel(
        "lot",
        tmp_path / "merged",
        str(tiny_model_dir),
        "dare_ties",
        "cpu",
        "float32",
        source_jobs=[
            {"job_id": SAFETY_JOB, "adapter_dir": str(refusing_adapter), "lot_number": "a"},
            {"job_id": OTHER_JOB, "adapter_dir": str(gone), "lot_number": "b"},
        ],
    )
    with pytest.raises(ExamError, match=rf"'{OTHER_JOB}': its adapter folder {gone} is missing"):
        exam_sources(merged)
    merged.source_jobs.pop()
    assert exam_sources(merged) == [ExamSource(SAFETY_JOB, refusing_adapter)]
    merged.source_jobs.append({"job_id": SAFETY_JOB, "adapter_dir": str(refusing_adapter)})
    with pytest.raises(ExamError, match=rf"merge source job '{SAFETY_JOB}' is listed twice"):
        exam_sources(merged)
