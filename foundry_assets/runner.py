"""Run one training job on a Dagster instance: register the manifest, add the partition, materialize the six assets."""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.errors import DataError
from foundry_assets.manifest import TrainingManifest, load_manifest
from foundry_assets.workspace import Workspace, default_root


@dataclass
class RunOutcome:
    """What a run did, in the terms a CLI user or a test cares about."""

    job_id: str
    run_id: str
    success: bool
    lot_number: str | None = None
    published: dict[str, Any] | None = None
    reason: str = ""
    failed_steps: list[str] = field(default_factory=list)
    stages: list["StageTime"] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    """Checks that failed without stopping the run (e.g. the audit check after publishing), with their reasons."""


@dataclass(frozen=True)
class StageTime:
    """One step of the run as the event log has it: how long it took, whether it succeeded, where it ran."""

    step: str
    seconds: float
    ok: bool
    device: str = ""


def stage_times(instance: dg.DagsterInstance, run_id: str) -> list[StageTime]:
    """Each step of the run in the order it ended, with its duration (and device, for the stages that record one)."""
    started: dict[str, float] = {}
    devices: dict[str, str] = {}
    stages: list[StageTime] = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            device = event.step_materialization_data.materialization.metadata.get("device")
            if device is not None:
                devices[event.step_key] = str(device.value)
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds = entry.timestamp - started.get(event.step_key, entry.timestamp)
            ok = event.event_type == dg.DagsterEventType.STEP_SUCCESS
            stages.append(StageTime(event.step_key, seconds, ok, devices.get(event.step_key, "")))
    return stages


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, created if needed; `./.dagster_home` when unset (the UI started by `make ui` uses the same)."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def register_job(manifest: TrainingManifest, instance: dg.DagsterInstance, workspace: Workspace) -> None:
    """Store the manifest as the job's definition and add its partition (both idempotent)."""
    from foundry_assets.defs.partitions import job_partitions

    workspace.register(manifest)
    assert job_partitions.name is not None
    if not instance.has_dynamic_partition(job_partitions.name, manifest.job_id):
        instance.add_dynamic_partitions(job_partitions.name, [manifest.job_id])


def _failure_reason(result: dg.ExecuteInProcessResult) -> tuple[str, list[str]]:
    reasons, steps = [], []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            steps.append(event.step_key)
            data = event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                data.error.message if data.error else None
            )
            reasons.append(f"{event.step_key}: {text.strip().splitlines()[0] if text else 'failed'}")
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            if isinstance(evaluation, dg.AssetCheckEvaluation) and not evaluation.passed:
                reasons.append(f"{evaluation.check_name} failed: {evaluation.description or ''}".strip())
    return "; ".join(reasons) or "the run failed", steps


def run_manifest(
    manifest_path: str | Path,
    *,
    instance: dg.DagsterInstance | None = None,
    workspace: Workspace | None = None,
    definitions: dg.Definitions | None = None,
    log_level: str = "INFO",
) -> RunOutcome:
    """Validate, register and materialize every asset of the job's partition in one run.

    `definitions` defaults to the code location's `defs`; tests pass one built with other resources.
    """
    from foundry_assets.definitions import defs as default_defs

    defs = definitions or default_defs
    manifest = load_manifest(manifest_path)
    if not Path(manifest.data.path).is_file():
        raise DataError(
            f"data.path {manifest.data.path!r} of job {manifest.job_id!r} is not a file; "
            "fix data.path in the manifest (relative paths are read from the manifest's folder)."
        )
    workspace = workspace or Workspace(default_root())
    instance = instance or dg.DagsterInstance.get()
    register_job(manifest, instance, workspace)
    job = defs.resolve_job_def("foundry_job")
    result = job.execute_in_process(
        instance=instance,
        partition_key=manifest.job_id,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    outcome = RunOutcome(
        job_id=manifest.job_id,
        run_id=result.run_id,
        success=result.success,
        stages=stage_times(instance, result.run_id),
        failed_checks=[
            f"{evaluation.check_name}: {evaluation.description or 'failed'}"
            for event in result.all_events
            if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
            and isinstance(evaluation := event.event_specific_data, dg.AssetCheckEvaluation)
            and not evaluation.passed
        ],
    )
    if result.success:
        outcome.published = result.output_for_node("published_artifact")
        outcome.lot_number = outcome.published.get("lot_number")
    else:
        outcome.reason, outcome.failed_steps = _failure_reason(result)
    for materialization in result.asset_materializations_for_node("raw_data"):
        lot = materialization.metadata.get("lot_number")
        outcome.lot_number = str(lot.value) if lot is not None else outcome.lot_number
    return outcome
