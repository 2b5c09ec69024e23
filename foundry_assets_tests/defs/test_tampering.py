"""Tampered stored values on a real Dagster instance: the step outputs under DAGSTER_HOME are JSON the gate does not
trust. A failed exam flipped to "passed" in storage publishes nothing (the trail says it failed), and a stored value
that is not a stage result is refused, never built."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.definitions import FOUNDRY_ASSETS, build_resources
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop, step_failure

pytestmark = [pytest.mark.slow, pytest.mark.faults]
JOB = "job-tampered"


def _publish_alone(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """`published_artifact` materialized on its own, as from the UI: its inputs are loaded from storage."""
    return dg.materialize(
        FOUNDRY_ASSETS,
        selection=[published_artifact],
        partition_key=JOB,
        instance=instance,
        resources=build_resources(),
        raise_on_error=False,
    )


def test_a_failed_exam_flipped_to_passed_in_storage_publishes_nothing(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, JOB, exam={"min_loss_improvement": 20.0})
    outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    assert not outcome.success and "exam_report_passes_gate" in outcome.reason

    stored = Path(instance.storage_directory()) / "exam_report" / f"{JOB}.json"
    document = json.loads(stored.read_text())
    assert document["type"] == "ExamResult", "stored as JSON, not a pickle"
    document["fields"]["report"].update(passed=True, reasons=[])
    stored.write_text(json.dumps(document))

    result = _publish_alone(instance)
    assert not result.success
    assert "latest exam verdict" in step_failure(result) and "failed" in step_failure(result)
    tag = yaml.safe_load(drop.manifest_path.read_text())["publish_target"]["tag"]
    assert not (drop.registry / tag).exists()  # the registry folder is shared by the session's demo jobs
    assert AuditTrail(workspace.audit_path(JOB)).records()[-1]["event"] == Event.PUBLISH_REFUSED

    document["type"] = (
        "builtins.eval"  # what a pickle could name; a JSON document can name only the six results
    )
    stored.write_text(json.dumps(document))
    refused = _publish_alone(instance)
    assert not refused.success and "is not a stage result" in step_failure(refused)
