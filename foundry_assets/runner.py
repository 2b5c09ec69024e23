"""Run one training job on a Dagster instance: register the manifest, add the partition, materialize the six assets.

`launch_manifest` + `follow_run` are what `foundry run` does: the run is submitted to the instance's queue, the
daemon launches it in a worker process (`launcher.py`), and run monitoring, retries, the UI's Terminate and
re-execution all apply. `run_manifest` executes in this process instead, with any `Definitions` (tests use it to
swap resources); such a run is recorded on the instance but no daemon supervises it.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

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


def _failure_reason(events: Sequence[dg.DagsterEvent]) -> tuple[str, list[str]]:
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


def _checked_manifest(manifest_path: str | Path) -> TrainingManifest:
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
    """Validate, register and materialize every asset of the job's partition in one run.

    `definitions` defaults to the code location's `defs`; tests pass one built with other resources.
    """
    from foundry_assets.definitions import defs as default_defs

    defs = definitions or default_defs
    manifest = _checked_manifest(manifest_path)
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
        failed_checks=_failed_checks(result.all_events),
    )
    if result.success:
        published: PublishedArtifact = result.output_for_node("published_artifact")
        outcome.published = published.to_dict()
        outcome.lot_number = published.lot_number
    else:
        outcome.reason, outcome.failed_steps = _failure_reason(result.all_events)
    for materialization in result.asset_materializations_for_node("raw_data"):
        lot = materialization.metadata.get("lot_number")
        outcome.lot_number = str(lot.value) if lot is not None else outcome.lot_number
    return outcome


# ---- through the instance: the queue, the daemon, a worker process per run -------------------------------------------

DAEMONS_NEEDED = ("QUEUED_RUN_COORDINATOR", "MONITORING")
"""The daemons a submitted run depends on: the queue that launches it and the monitor that fails it if its worker dies."""
HEARTBEAT_FRESH_S = 45.0


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a dagster-daemon serving this instance's queue and run monitoring has sent a heartbeat lately."""
    beats = instance.get_daemon_heartbeats()
    now = time.time()
    return all(t in beats and now - beats[t].timestamp < HEARTBEAT_FRESH_S for t in DAEMONS_NEEDED)


@contextlib.contextmanager
def instance_daemon(instance: dg.DagsterInstance, say: Callable[[str], None]) -> Iterator[None]:
    """The instance's daemon for as long as the block runs: the one already running (`dagster dev`, a service), or a
    `dagster-daemon run` started here and stopped at the end (it dies with this process if this process is killed)."""
    if daemon_running(instance):
        yield
        return
    from foundry_assets.processes import die_with_parent

    logs = Path(instance.root_directory) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "daemon.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", str(WORKSPACE_YAML)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this process, which stops the run first, then the daemon
            preexec_fn=die_with_parent,
        )
    say(
        f"no dagster-daemon was serving {instance.root_directory}: started one (pid {process.pid}) for this command"
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        instance.wipe_daemon_heartbeats()  # so the next command does not take this daemon's last beat for a live one


def launch_manifest(
    manifest_path: str | Path, *, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> tuple[TrainingManifest, str]:
    """Validate and register the job, then submit one run of `foundry_job` for its partition to the instance's queue.

    The run is created from the code location (as the UI and `dagster job launch` create runs), so it can be
    re-executed from the UI and its worker can be launched by the daemon. `tags` are added to the run's.
    """
    from dagster._cli.job import execute_launch_command
    from dagster_shared.cli import WorkspaceOpts

    manifest = _checked_manifest(manifest_path)
    register_job(manifest, instance, Workspace(default_root()))
    with _stdout_to_stderr():  # the code server it starts logs to its stdout; ours is the command's summary
        run = execute_launch_command(
            instance=instance,
            workspace_opts=WorkspaceOpts(workspace=(str(WORKSPACE_YAML),)),
            job_name="foundry_job",
            tags=json.dumps({**(tags or {}), "dagster/partition": manifest.job_id}),
        )
    return manifest, run.run_id


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _stage_line(stage: StageTime) -> str:
    where = f"  on {stage.device}" if stage.device else ""
    return f"  {stage.step:<18} {stage.seconds:7.1f} s  {'ok' if stage.ok else 'FAILED'}{where}"


def follow_run(
    instance: dg.DagsterInstance,
    run_id: str,
    job_id: str,
    say: Callable[[str], None],
    *,
    log: Callable[[str], None] | None = None,
    verbose: bool = False,
    poll_s: float = 0.5,
    retry_wait_s: float = 120.0,
) -> RunOutcome:
    """Report the run's progress until it finishes: each stage as it ends to `say`, the stages' own log lines (and,
    `verbose`, Dagster's events) to `log` (default `say`); follow the automatic retry Dagster starts for a crashed
    run. Returns the outcome of the last run followed."""
    log = log or say
    from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

    cursor: str | None = None
    clock = StageClock()
    events: list[dg.DagsterEvent] = []
    told_queued = False
    while True:
        connection = instance.get_records_for_run(run_id, cursor=cursor)
        cursor = connection.cursor
        for record in connection.records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None:
                level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
                if isinstance(level, int) and level >= (logging.DEBUG if verbose else logging.INFO):
                    log(f"{entry.step_key or 'run'}: {entry.user_message}")
                continue
            events.append(event)
            if verbose:
                log(f"[{event.event_type_value}] {entry.step_key or ''} {entry.user_message}".rstrip())
            stage = clock.feed(entry)
            if stage is not None:
                say(_stage_line(stage))
        if connection.has_more:
            continue
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if (
            run.status == dg.DagsterRunStatus.QUEUED
            and not told_queued
            and time.time() - run_created(instance, run_id) > 10
        ):
            told_queued = True
            say(
                f"run {run_id} is queued: waiting for the daemon and the gpu pool (foundry gpus shows who holds it)"
            )
        if run.is_finished:
            if run.status == dg.DagsterRunStatus.FAILURE and run.tags.get(WILL_RETRY_TAG) == "true":
                retry = _wait_for_tag(instance, run_id, AUTO_RETRY_RUN_ID_TAG, retry_wait_s)
                if retry:
                    reason, _ = _failure_reason(events)
                    log(f"run {run_id} failed ({reason}); Dagster retries it as run {retry}")
                    run_id, cursor, events, clock = retry, None, [], StageClock()
                    continue
            return _outcome(run, job_id, events, clock.stages)
        time.sleep(poll_s)


def run_created(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    return record.create_timestamp.timestamp() if record is not None else time.time()


def _wait_for_tag(instance: dg.DagsterInstance, run_id: str, tag: str, wait_s: float) -> str | None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.tags.get(tag):
            return run.tags[tag]
        time.sleep(1.0)
    return None


def _outcome(
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
        outcome.reason, outcome.failed_steps = _failure_reason(events)
        if run.status == dg.DagsterRunStatus.CANCELED:
            outcome.reason = "the run was terminated" + (
                f" ({outcome.reason})" if outcome.failed_steps else ""
            )
    return outcome


def terminate_on_signals(instance: dg.DagsterInstance, run_id: Callable[[], str | None]) -> None:
    """Make SIGTERM and Ctrl-C of this command terminate its run (as the UI's Terminate does) before it exits."""

    def stop(signum: int, _frame: object) -> None:
        current = run_id()
        if current is not None:
            instance.run_coordinator.cancel_run(current)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
