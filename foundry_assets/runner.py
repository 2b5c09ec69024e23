"""Run one training job on a Dagster instance: register the manifest, add the partition, materialize the six assets.

`run_manifest` executes in this process, with any `Definitions` (tests use it to swap resources); such a run is
recorded on the instance but no daemon supervises it. What `foundry run` does instead — submit the run to the
instance's queue and follow it — is in `submit.py`. Both report a `RunOutcome`, built here from the run's events.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.actor import ACTOR_TAG, current_actor
from foundry_assets.errors import DataError
from foundry_assets.fsio import copy_file
from foundry_assets.manifest import TrainingManifest, load_manifest
from foundry_assets.stages import PublishedArtifact
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


class StageClock:
    """Each step's duration and device, from the run's event log entries fed in order."""

    def __init__(self) -> None:
        self.stages: list[StageTime] = []
        self._started: dict[str, float] = {}
        self._devices: dict[str, str] = {}

    def feed(self, entry: dg.EventLogEntry) -> StageTime | None:
        """Take one entry; the step's StageTime when the entry ends a step, else None."""
        event = entry.dagster_event
        if event is None or not event.step_key:
            return None
        if event.event_type == dg.DagsterEventType.STEP_START:
            self._started[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            device = event.step_materialization_data.materialization.metadata.get("device")
            if device is not None:
                self._devices[event.step_key] = str(device.value)
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds = entry.timestamp - self._started.get(event.step_key, entry.timestamp)
            ok = event.event_type == dg.DagsterEventType.STEP_SUCCESS
            stage = StageTime(event.step_key, seconds, ok, self._devices.get(event.step_key, ""))
            self.stages.append(stage)
            return stage
        return None


def stage_times(instance: dg.DagsterInstance, run_id: str) -> list[StageTime]:
    """Each step of the run in the order it ended, with its duration (and device, for the stages that record one)."""
    clock = StageClock()
    for entry in instance.all_logs(run_id):
        clock.feed(entry)
    return clock.stages


INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")
"""The foundry's instance settings (queue, run launcher, monitoring, retries, the gpu pool)."""
WORKSPACE_YAML = Path(__file__).with_name("workspace.yaml")
"""The code location (foundry_assets.definitions, named foundry_assets) as the daemon, the UI and `foundry run` load it."""


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME, created if needed, with the foundry's dagster.yaml when it has none; `./.dagster_home` when unset
    (the UI started by `make ui` uses the same)."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        copy_file(INSTANCE_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def register_job(manifest: TrainingManifest, instance: dg.DagsterInstance, workspace: Workspace) -> None:
    """Store the manifest as the job's definition and add its partition (both idempotent)."""
    from foundry_assets.defs.partitions import job_partitions

    workspace.register(manifest)
    assert job_partitions.name is not None
    if not instance.has_dynamic_partition(job_partitions.name, manifest.job_id):
        instance.add_dynamic_partitions(job_partitions.name, [manifest.job_id])


def failure_reason(events: Sequence[dg.DagsterEvent]) -> tuple[str, list[str]]:
    reasons, steps = [], []
    for event in events:
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
        elif event.event_type == dg.DagsterEventType.ENGINE_EVENT and not event.step_key:
            engine = event.engine_event_data  # the run itself broke (launch, worker), not a step
            if engine is not None and engine.error is not None:
                reasons.append(f"{event.message or 'engine'}: {engine.error.message.strip().splitlines()[0]}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and event.message and not reasons:
            reasons.append(event.message)
    return "; ".join(reasons) or "the run failed", steps


def checked_manifest(manifest_path: str | Path) -> TrainingManifest:
    manifest = load_manifest(manifest_path)
    if not Path(manifest.data.path).is_file():
        raise DataError(
            f"data.path {manifest.data.path!r} of job {manifest.job_id!r} is not a file; "
            "fix data.path in the manifest (relative paths are read from the manifest's folder)."
        )
    return manifest


def _failed_checks(events: Sequence[dg.DagsterEvent]) -> list[str]:
    return [
        f"{evaluation.check_name}: {evaluation.description or 'failed'}"
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
        and isinstance(evaluation := event.event_specific_data, dg.AssetCheckEvaluation)
        and not evaluation.passed
    ]


def run_manifest(
    manifest_path: str | Path,
    *,
    instance: dg.DagsterInstance | None = None,
    workspace: Workspace | None = None,
    definitions: dg.Definitions | None = None,
    log_level: str = "INFO",
) -> RunOutcome:
    """Validate, register and materialize every asset of the job's partition in one run, as this process's actor
    (the `foundry/actor` tag names it in every record the run writes).

    `definitions` defaults to the code location's `defs`; tests pass one built with other resources.
    """
    from foundry_assets.definitions import defs as default_defs

    defs = definitions or default_defs
    manifest = checked_manifest(manifest_path)
    workspace = workspace or Workspace(default_root())
    instance = instance or dg.DagsterInstance.get()
    register_job(manifest, instance, workspace)
    job = defs.resolve_job_def("foundry_job")
    result = job.execute_in_process(
        instance=instance,
        partition_key=manifest.job_id,
        raise_on_error=False,
        tags={ACTOR_TAG: current_actor().to_tag()},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
    )
    outcome = RunOutcome(
        job_id=manifest.job_id,
        run_id=result.run_id,
        success=result.success,
        stages=stage_times(instance, result.run_id),
        failed_checks=_failed_checks(result.all_events),
    )
    if result.success and result.asset_materializations_for_node("published_artifact"):
        published: PublishedArtifact = result.output_for_node("published_artifact")
        outcome.published = published.to_dict()
        outcome.lot_number = published.lot_number
    elif result.success:  # `release.require_approval`: the publish waits for signatures (`release_pending`)
        outcome.reason = "published nothing: the release awaits approval (release_pending in the audit trail)"
    else:
        outcome.reason, outcome.failed_steps = failure_reason(result.all_events)
    for materialization in result.asset_materializations_for_node("raw_data"):
        lot = materialization.metadata.get("lot_number")
        outcome.lot_number = str(lot.value) if lot is not None else outcome.lot_number
    return outcome


def outcome_of(
    run: dg.DagsterRun, job_id: str, events: list[dg.DagsterEvent], stages: list[StageTime]
) -> RunOutcome:
    outcome = RunOutcome(
        job_id=job_id,
        run_id=run.run_id,
        success=run.status == dg.DagsterRunStatus.SUCCESS,
        stages=stages,  # as followed: the event log is not read again
        failed_checks=_failed_checks(events),
    )
    for event in events:
        if event.event_type != dg.DagsterEventType.ASSET_MATERIALIZATION:
            continue
        materialization = event.step_materialization_data.materialization
        values = {key: value.value for key, value in materialization.metadata.items()}
        if "lot_number" in values:
            outcome.lot_number = str(values["lot_number"])
        if materialization.asset_key == dg.AssetKey("published_artifact"):
            outcome.published = values
    if not outcome.success:
        outcome.reason, outcome.failed_steps = failure_reason(events)
        if run.status == dg.DagsterRunStatus.CANCELED:
            outcome.reason = "the run was terminated" + (
                f" ({outcome.reason})" if outcome.failed_steps else ""
            )
    return outcome
