"""raw_data's launch config: a job started from the launchpad with its manifest pasted, or with a drop's location."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from foundry_assets.actor import SENSOR_TAG
from foundry_assets.audit import AuditTrail
from foundry_assets.definitions import build_definitions
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop


def _launch(
    instance: dg.DagsterInstance, job_id: str, config: dict[str, str], tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    """What the launchpad does once the engineer has added the partition and filled in raw_data's config (no tags:
    the OSS UI records no user), or a sensor's run request (its tags)."""
    instance.add_dynamic_partitions(str(job_partitions.name), [job_id])
    return (
        build_definitions()
        .resolve_job_def("foundry_job")
        .execute_in_process(
            instance=instance,
            partition_key=job_id,
            run_config={"ops": {"raw_data": {"config": config}}},
            raise_on_error=False,
            tags=tags,
        )
    )


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, str]:
    [event] = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data.user_failure_data
    return str(event.step_key), str(data.description if data else event.step_failure_data.error)


def _pasted(drop_manifest: Path, **changes: object) -> str:
    document = yaml.safe_load(drop_manifest.read_text())
    document["data"]["path"] = str((drop_manifest.parent / document["data"]["path"]).resolve())
    document.update(changes)
    return yaml.safe_dump(document, sort_keys=False)


@pytest.mark.slow
def test_a_pasted_manifest_registers_the_job_and_publishes(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "pasted-job")
    result = _launch(instance, "pasted-job", {"manifest_yaml": _pasted(drop.manifest_path)})
    assert result.success
    assert workspace.load("pasted-job").job_id == "pasted-job"
    assert result.output_for_node("published_artifact").status == "published"
    ui = {
        "kind": "service",
        "name": "dagster",
        "run_id": result.run_id,
    }  # OSS Dagster does not know who clicked
    assert [
        r["event"] for r in AuditTrail(workspace.audit_path("pasted-job")).records() if r["actor"] != ui
    ] == []


def test_a_bad_pasted_manifest_fails_raw_data_with_field_named_errors_and_registers_nothing(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "bad-paste")
    text = _pasted(drop.manifest_path, method_config={"type": "lora", "rank": 0})
    result = _launch(instance, "bad-paste", {"manifest_yaml": text})
    step, reason = _failure(result)
    assert step == "raw_data" and "method_config.rank" in reason
    assert not workspace.manifest_path("bad-paste").exists()
    assert not result.asset_materializations_for_node("curated_dataset")  # nothing ran past the check


def test_the_pasted_job_id_must_be_the_runs_partition(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "other-id")
    _, reason = _failure(_launch(instance, "this-partition", {"manifest_yaml": _pasted(drop.manifest_path)}))
    assert "holds job_id 'other-id', but this run is for job 'this-partition'" in reason


def test_a_pasted_manifest_needs_its_data_on_the_node(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "relative-data")
    text = drop.manifest_path.read_text()  # data.path relative: nothing to resolve it against
    _, reason = _failure(_launch(instance, "relative-data", {"manifest_yaml": text}))
    assert "data.path 'data.jsonl' is relative" in reason


@pytest.mark.slow
def test_a_drop_location_is_received_by_the_run(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "by-location")
    sensor = {SENSOR_TAG: "drop_sensor"}  # Dagster tags each run a sensor requests with the sensor's name
    result = _launch(instance, "by-location", {"drop": str(drop.manifest_path.parent)}, sensor)
    assert result.success
    actor = {"kind": "sensor", "name": "drop_sensor", "run_id": result.run_id}
    assert [
        r["event"] for r in AuditTrail(workspace.audit_path("by-location")).records() if r["actor"] != actor
    ] == []
    assert Path(workspace.load("by-location").data.path).is_relative_to(workspace.root / "received")
