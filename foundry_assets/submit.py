"""What `foundry run` does: submit a job's run to the instance's queue and follow it to its end.

The daemon launches the run in a worker process (`launcher.py`), so run monitoring, retries, the UI's Terminate and
re-execution all apply; this command only reads the run's event log (stage lines to stdout, the stages' log lines to
stderr) and cancels the run when it is stopped itself.
"""

import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg

from foundry_assets.audit import AuditTrail
from foundry_assets.errors import FoundryError
from foundry_assets.intake.lot import compute_lot
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher.gate import already_published, published_record, verified_release
from foundry_assets.runner import (
    WORKSPACE_YAML,
    RunOutcome,
    StageClock,
    StageTime,
    checked_manifest,
    failure_reason,
    outcome_of,
    register_job,
)
from foundry_assets.workspace import Workspace, default_root


def published_before(manifest_path: str | Path) -> str | None:
    """What `foundry run` says instead of launching, when the manifest's lot is already published under its tag and
    the registry copy still verifies (`gate.verified_release`). None when the lot is not published, or its copy is
    gone."""
    manifest = checked_manifest(manifest_path)
    path = Workspace(default_root()).audit_path(manifest.job_id)
    if not path.is_file():
        return None
    try:
        lot = compute_lot(manifest.data.path, manifest).lot_number
        records = AuditTrail(path).records()
        if published_record(records, manifest.publish_target, lot) is None:
            return None  # no publisher resource to build
        from foundry_assets.definitions import build_resources

        with dg.build_resources({"publisher": build_resources()["publisher"]}) as resources:
            record = verified_release(records, manifest.publish_target, lot, resources.publisher.verify)
    except FoundryError:  # a broken trail: the run itself reports it
        return None
    return None if record is None else already_published(manifest.job_id, record, lot)


def launch_manifest(
    manifest_path: str | Path, *, instance: dg.DagsterInstance, tags: dict[str, str] | None = None
) -> tuple[TrainingManifest, str]:
    """Validate and register the job, then submit one run of `foundry_job` for its partition to the instance's queue.

    The run is created from the code location (as the UI and `dagster job launch` create runs), so it can be
    re-executed from the UI and its worker can be launched by the daemon. `tags` are added to the run's.
    """
    from dagster._cli.job import execute_launch_command
    from dagster_shared.cli import WorkspaceOpts

    manifest = checked_manifest(manifest_path)
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
            _report(record.event_log_entry, clock, events, say, log, verbose)
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
                    reason, _ = failure_reason(events)
                    log(f"run {run_id} failed ({reason}); Dagster retries it as run {retry}")
                    run_id, cursor, events, clock = retry, None, [], StageClock()
                    continue
            return outcome_of(run, job_id, events, clock.stages)
        time.sleep(poll_s)


def _report(
    entry: dg.EventLogEntry,
    clock: StageClock,
    events: list[dg.DagsterEvent],
    say: Callable[[str], None],
    log: Callable[[str], None],
    verbose: bool,
) -> None:
    """One event-log entry of a followed run: a log line (at INFO and up; DEBUG too when `verbose`) to `log`, a
    Dagster event kept in `events` (and shown when `verbose`), a finished stage's line to `say`."""
    event = entry.dagster_event
    if event is None:
        level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
        if isinstance(level, int) and level >= (logging.DEBUG if verbose else logging.INFO):
            log(f"{entry.step_key or 'run'}: {entry.user_message}")
        return
    events.append(event)
    if verbose:
        log(f"[{event.event_type_value}] {entry.step_key or ''} {entry.user_message}".rstrip())
    stage = clock.feed(entry)
    if stage is not None:
        say(_stage_line(stage))


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


def terminate_on_signals(instance: dg.DagsterInstance, run_id: Callable[[], str | None]) -> None:
    """Make SIGTERM and Ctrl-C of this command terminate its run (as the UI's Terminate does) before it exits."""

    def stop(signum: int, _frame: object) -> None:
        current = run_id()
        if current is not None:
            instance.run_coordinator.cancel_run(current)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
