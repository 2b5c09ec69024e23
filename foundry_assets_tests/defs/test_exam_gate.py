"""The exam gate on a real Dagster instance: each failure reason blocks publishing; the report shows the numbers."""

import json
from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.demo.stories import logic_records, story_corpus, story_manifest, write_drop
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace

pytestmark = pytest.mark.slow
CHECK = dg.AssetCheckKey(dg.AssetKey("exam_report"), "exam_report_passes_gate")


def _logic_job(root: Path, job_id: str, **exam: object) -> Path:
    """A short logic job (few steps: these tests are about the gate, not the skill)."""
    model_dir = build_tiny_llama(root / "models" / "tiny-llama-story", corpus=story_corpus())
    manifest = story_manifest(
        job_id, model_dir, root / f"registry-{job_id}", method_config={"max_steps": 5}, exam=exam
    )
    return write_drop(root, job_id, logic_records(count=60), manifest)


def _materialization(instance: dg.DagsterInstance, asset: str, job_id: str) -> dg.AssetMaterialization | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[job_id]), limit=1
    )
    return result.records[0].asset_materialization if result.records else None


def _table(markdown: str) -> list[list[str]]:
    rows = [
        line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| metric")
    ]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def test_metric_below_the_required_improvement_blocks_publishing_and_the_report_matches(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    path = _logic_job(
        demo_root, "gate-logic", gate=["heldout_loss", "logic_score"], min_logic_improvement=0.99
    )
    outcome = run_manifest(path, instance=instance, workspace=workspace)
    assert not outcome.success
    assert "exam_report_passes_gate" in outcome.reason and "logic_score" in outcome.reason
    assert _materialization(instance, "published_artifact", "gate-logic") is None
    assert not (demo_root / "registry-gate-logic").exists()

    report = json.loads((workspace.stage_dir("gate-logic", "exam") / "exam_report.json").read_text())
    logic = next(r for r in report["metrics"] if r["name"] == "logic_score")
    assert logic["result"] == "FAIL" and logic["items"] > 0
    reason = next(r for r in report["reasons"] if r.startswith("logic_score"))
    assert _fmt(logic["candidate"]) in reason and _fmt(logic["baseline"]) in reason
    assert len(report["logic_items"]) == logic["items"]
    assert logic["candidate"] == pytest.approx(
        sum(i["candidate_correct"] for i in report["logic_items"]) / logic["items"]
    )
    assert next(r for r in report["metrics"] if r["name"] == "safety_rate")["result"] == "skipped"

    # the markdown table in the asset's metadata, the JSON report and the blocking check all show the same numbers
    exam = _materialization(instance, "exam_report", "gate-logic")
    assert exam is not None
    table = _table(exam.metadata["report"].value)
    assert [row[0] for row in table] == [m["name"] for m in report["metrics"]]
    for row, metric in zip(table, report["metrics"], strict=True):
        assert row[1:] == [
            _fmt(metric["baseline"]),
            _fmt(metric["candidate"]),
            metric["required"],
            metric["result"],
        ]
    metrics = {
        record.data["name"]: record.data for record in exam.metadata["metrics"].records
    }  # the UI's table
    assert list(metrics) == [m["name"] for m in report["metrics"]]
    assert (
        metrics["logic_score"]["result"] == "FAIL"
        and metrics["logic_score"]["candidate"] == logic["candidate"]
    )
    check = instance.event_log_storage.get_latest_asset_check_execution_by_key([CHECK])[CHECK]
    evaluation = check.event.dagster_event.event_specific_data  # type: ignore[union-attr]
    assert evaluation.passed is False
    meta = evaluation.metadata
    assert meta["logic_score_candidate"].value == logic["candidate"]
    assert meta["logic_score_baseline"].value == logic["baseline"]
    assert meta["logic_score_result"].value == "FAIL"
    assert meta["logic_score_required"].value == logic["required"]


def test_contamination_above_the_limit_blocks_publishing_listing_the_items(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    # nothing gated but contamination; 3-grams such as "is not red" recur across the split
    path = _logic_job(demo_root, "gate-contaminated", gate=[], ngram_size=3, max_contamination=0.1)
    outcome = run_manifest(path, instance=instance, workspace=workspace)
    assert not outcome.success
    assert "exam_report_passes_gate" in outcome.reason and "3-gram" in outcome.reason
    assert _materialization(instance, "published_artifact", "gate-contaminated") is None
    report = json.loads((workspace.stage_dir("gate-contaminated", "exam") / "exam_report.json").read_text())
    assert len(report["reasons"]) == 1
    contaminated = report["contamination"]["contaminated"]
    assert contaminated and f"contaminated test indices: {contaminated[:20]}" in report["reasons"][0]
    assert {m["result"] for m in report["metrics"] if m["name"] != "contaminated_fraction"} <= {
        "not gated",
        "skipped",
    }
