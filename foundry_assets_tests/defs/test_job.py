"""The whole loop on a real Dagster instance: six partitioned assets, the blocking exam, the cross-run gate."""

import json
from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.actor import current_actor
from foundry_assets.audit import verify_audit_log
from foundry_assets.definitions import FOUNDRY_ASSETS, build_resources, defs
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.intake.fingerprint import installed, packages_sha256
from foundry_assets.manifest import load_manifest
from foundry_assets.publisher.base import HASH_MANIFEST
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop

ASSET_NAMES = [a.key.to_user_string() for a in FOUNDRY_ASSETS]
pytestmark = pytest.mark.slow


def _latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.AssetMaterialization | None:
    record = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if record is None or record.asset_materialization is None:
        return None
    materialization = record.asset_materialization
    return materialization if materialization.partition == partition else None


def test_definitions_load_with_lineage_and_blocking_check() -> None:
    graph = defs.resolve_asset_graph()
    expected = [
        ("raw_data", "curated_dataset"),
        ("curated_dataset", "trained_adapter"),
        ("trained_adapter", "merged_model"),
        ("merged_model", "exam_report"),
        ("exam_report", "published_artifact"),
    ]
    for upstream, downstream in expected:
        assert dg.AssetKey(upstream) in graph.get(dg.AssetKey(downstream)).parent_keys
    for asset in FOUNDRY_ASSETS:
        assert asset.partitions_def == job_partitions
    checks = {key.name: key for key in defs.resolve_asset_graph().asset_check_keys}
    assert sorted(checks) == ["exam_report_passes_gate", "published_artifact_audit_consistent"]
    assert checks["exam_report_passes_gate"].asset_key == dg.AssetKey("exam_report")
    assert checks["published_artifact_audit_consistent"].asset_key == dg.AssetKey("published_artifact")
    assert defs.resolve_job_def("foundry_job") is not None


def test_demo_job_materializes_all_six_assets(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "job-ok")
    outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    assert outcome.success, outcome.reason
    assert outcome.failed_checks == []  # the audit check after publishing agrees too
    last_step = outcome.stages[-1].step
    assert last_step == "published_artifact_published_artifact_audit_consistent"
    assert instance.get_dynamic_partitions(job_partitions.name) == ["job-ok"]

    materializations = {name: _latest(instance, name, "job-ok") for name in ASSET_NAMES}
    assert all(materializations.values()), materializations
    lot = materializations["raw_data"].metadata["lot_number"].value
    assert lot == outcome.lot_number and len(lot) == 64
    assert {m.metadata["lot_number"].value for m in materializations.values()} == {lot}

    curated = materializations["curated_dataset"].metadata
    assert curated["removed"].value >= drop.planted_duplicates * 0.9
    assert curated["rows_in"].value == curated["kept"].value + curated["removed"].value

    exam = materializations["exam_report"].metadata  # the exam's numbers on the asset itself, one per key
    assert exam["heldout_loss_candidate"].value < exam["heldout_loss_baseline"].value
    assert exam["heldout_loss_result"].value == "pass"

    trained = materializations["trained_adapter"].metadata
    assert trained["device"].value == "cpu"  # CI has no GPU, and the metadata says so
    assert trained["backend"].value in ("unsloth", "peft")
    assert trained["changed_params"].value > 0

    check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(dg.AssetKey("exam_report"), "exam_report_passes_gate")]
    )
    assert check  # the blocking check ran

    # the auditor's view on the partition: the cross-checked chain's verdict, the report and the manifest
    audit_key = dg.AssetCheckKey(dg.AssetKey("published_artifact"), "published_artifact_audit_consistent")
    evaluation = instance.event_log_storage.get_latest_asset_check_execution_by_key([audit_key])[audit_key]
    assert evaluation.event is not None and evaluation.event.dagster_event is not None
    result = evaluation.event.dagster_event.event_specific_data
    assert isinstance(result, dg.AssetCheckEvaluation) and result.partition == "job-ok"
    assert result.passed, result.metadata["problems"].value
    assert str(result.metadata["verdict"].value).startswith("complete and consistent")
    assert "job_id: job-ok" in str(result.metadata["manifest"].value)

    published = outcome.published or {}
    tag_dir = drop.registry / published["tag"]
    assert published["uri"] == tag_dir.resolve().as_uri()
    assert published["artifact"] == "merged_model", (
        "the demo job trains DoRA: auto publishes the merged model"
    )
    assert (tag_dir / HASH_MANIFEST).exists() and (tag_dir / "config.json").exists()
    assert (tag_dir / "model.safetensors").exists() and not (tag_dir / "merged_model").exists()
    assert not (workspace.stage_dir("job-ok", "staging") / published["tag"]).exists()

    audit = workspace.audit_path("job-ok")
    assert verify_audit_log(
        audit, expected_head=materializations["published_artifact"].metadata["audit_head"].value
    ).ok
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    kinds = [record["event"] for record in records]
    for kind in ("job_accepted", "data_curated", "adapter_saved", "merged", "exam_verdict", "published"):
        assert kind in kinds
    assert records[0]["data"]["lot_number"] == lot
    launcher = current_actor().in_run(outcome.run_id).to_dict()  # run_manifest tags the run with its caller
    assert [
        r["event"] for r in records if r.get("actor") != launcher
    ] == []  # every record says who, in which run
    environment = records[0]["data"]["environment"]  # where the lot was made, beside it in trail and metadata
    assert environment == materializations["raw_data"].metadata["environment"].value
    assert environment["packages_sha256"] == packages_sha256(installed()) and environment["gpu"]
    loss_steps = [record["data"]["step"] for record in records if record["event"] == "training_loss"]
    assert loss_steps == [10, 20, 30, 40]


def test_failed_exam_publishes_nothing_even_when_publish_runs_alone(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "job-fails-exam", exam={"min_loss_improvement": 20.0})
    outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    assert not outcome.success
    assert "exam_report_passes_gate" in outcome.reason
    assert _latest(instance, "exam_report", "job-fails-exam") is not None
    assert _latest(instance, "published_artifact", "job-fails-exam") is None
    tag_dir = drop.registry / load_manifest(drop.manifest_path).publish_target.tag
    assert not tag_dir.exists()

    # A later run that materializes published_artifact alone (as from the UI) is refused by the asset itself.
    result = dg.materialize(
        FOUNDRY_ASSETS,
        selection=[published_artifact],
        partition_key="job-fails-exam",
        instance=instance,
        resources=build_resources(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "did not pass" in failure.step_failure_data.user_failure_data.description
    assert not tag_dir.exists()
    assert '"publish_refused"' in workspace.audit_path("job-fails-exam").read_text()
