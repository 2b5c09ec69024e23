"""Runs submitted to the instance, as `foundry run` submits them: a real daemon, a worker process per run.

A worker SIGKILLed mid-training: run monitoring fails the run, its `gpu` pool slot is freed, and Dagster's automatic
retry re-executes it from the failure, resuming the training from its newest checkpoint. Terminate (what the UI's
button and Ctrl-C of `foundry run` do) cancels a run cleanly and frees its slot.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pytest
import yaml
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG

from foundry_assets.daemon import daemon_running, instance_daemon, keeper_alive
from foundry_assets.demo.drop import write_demo_drop
from foundry_assets.launcher import HOST_TAG, PID_TAG, STARTED_TAG, ProcessRunLauncher
from foundry_assets.runner import INSTANCE_YAML
from foundry_assets.submit import follow_run, launch_manifest


def _wait(what: str, condition: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """The foundry's dagster.yaml with the daemon's loops tightened from seconds to about one."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load(INSTANCE_YAML.read_text())
    config["run_coordinator"]["config"]["dequeue_interval_seconds"] = 1
    config["run_monitoring"].update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "foundry"))
    with dg.DagsterInstance.get() as instance:
        yield instance


def _drop(root: Path, **method: Any) -> Path:
    drop = write_demo_drop(root)
    doc = yaml.safe_load(drop.manifest_path.read_text())
    doc["method_config"].update(method)
    drop.manifest_path.write_text(yaml.safe_dump(doc))
    return drop.manifest_path


def _gpu_slot_holders(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}


def _training_started(instance: dg.DagsterInstance, run_id: str, job_dir: Path) -> bool:
    """The run holds its gpu slot and has written one whole checkpoint (trainer_state.json is the trainer's last write).

    Waiting for a bare `checkpoint-N/` folder raced the trainer: a kill while the first checkpoint was being written
    left nothing to resume from, and the retry rightly started at step 0.
    """
    return run_id in _gpu_slot_holders(instance) and any(job_dir.glob("**/checkpoint-*/trainer_state.json"))


@pytest.mark.slow
@pytest.mark.faults  # the run worker SIGKILLed mid-training
def test_a_killed_worker_is_failed_by_monitoring_its_slot_freed_and_the_retry_resumes(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    manifest_path = _drop(tmp_path / "demo", max_steps=160, checkpoint_steps=10)
    lines: list[str] = []
    with instance_daemon(instance, lines.append):
        assert lines and "started one" in lines[0]  # no daemon served this fresh instance
        manifest, run_id = launch_manifest(manifest_path, instance=instance)
        job_dir = Path(os.environ["FOUNDRY_HOME"]) / "jobs" / manifest.job_id
        _wait("a checkpoint of the first run", lambda: _training_started(instance, run_id, job_dir), 240)
        run = instance.get_run_by_id(run_id)
        assert run is not None
        os.kill(int(run.tags[PID_TAG]), signal.SIGKILL)  # the worker, as the OOM killer would

        failed = _wait("monitoring to fail the run", lambda: _finished(instance, run_id), 60)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        messages = [entry.message for entry in instance.all_logs(run_id)]
        assert any("run worker" in m and "gone" in m for m in messages), messages[-5:]
        _wait(
            "the daemon to free the killed run's gpu slot",
            lambda: run_id not in _gpu_slot_holders(instance),
            60,
        )

        retry_id = _wait(
            "the automatic retry", lambda: instance.get_run_by_id(run_id).tags.get(AUTO_RETRY_RUN_ID_TAG)
        )
        outcome = follow_run(instance, retry_id, manifest.job_id, lines.append)
    assert outcome.success, outcome.reason
    assert outcome.published and outcome.published["status"] == "published"
    trained = instance.get_latest_materialization_event(dg.AssetKey("trained_adapter"))
    assert trained is not None and trained.run_id == retry_id
    metadata = trained.asset_materialization.metadata  # type: ignore[union-attr]
    assert metadata["resumed_from_step"].value >= 10 and metadata["steps"].value == 160
    assert any(line.startswith("  trained_adapter") and line.endswith("ok  on cpu") for line in lines)


@pytest.mark.slow
def test_terminate_cancels_the_run_and_frees_its_slot(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    manifest_path = _drop(tmp_path / "demo", max_steps=400, checkpoint_steps=10)
    with instance_daemon(instance, lambda line: None):
        manifest, run_id = launch_manifest(manifest_path, instance=instance)
        job_dir = Path(os.environ["FOUNDRY_HOME"]) / "jobs" / manifest.job_id
        _wait("training to start", lambda: _training_started(instance, run_id, job_dir), 240)
        assert instance.run_coordinator.cancel_run(run_id)  # what the UI's Terminate calls
        run = _wait("the run to end", lambda: _finished(instance, run_id), 60)
        assert run.status == dg.DagsterRunStatus.CANCELED
        assert AUTO_RETRY_RUN_ID_TAG not in run.tags  # a terminated run is not retried
        _wait("its gpu slot to be free", lambda: run_id not in _gpu_slot_holders(instance), 60)


def _finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def _health(process_tags: dict[str, str]) -> str:
    launcher = ProcessRunLauncher()
    run = dg.DagsterRun(job_name="foundry_job", run_id="r1", tags=process_tags)
    return launcher.check_run_worker_health(run).status.value


def test_worker_health_follows_the_recorded_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tags = {
            PID_TAG: str(child.pid),
            STARTED_TAG: f"{psutil.Process(child.pid).create_time():.3f}",
            HOST_TAG: socket.gethostname(),
        }
        assert _health(tags) == "RUNNING"
        assert _health({**tags, STARTED_TAG: "1000.0"}) == "FAILED"  # the pid now names another process
        child.kill()
        child.wait()
        assert _health(tags) == "FAILED"
    finally:
        child.kill()
    assert _health({}) == "RUNNING"  # executed in process (tests): no worker of ours to check


def test_two_commands_at_once_share_one_daemon_that_stops_after_the_last(
    instance: dg.DagsterInstance,
) -> None:
    """Two `foundry run` at once on a node with no daemon (two jobs, two GPUs) once started a daemon each, and the two
    daemons launched the same run twice. One keeper serves both and stops only when neither needs it any more."""
    home = Path(instance.root_directory)
    lines: list[str] = []
    ready = threading.Barrier(2)

    def command(hold_s: float, done: threading.Event) -> None:
        ready.wait()
        with instance_daemon(instance, lines.append):
            _wait("the daemon's heartbeat", lambda: daemon_running(instance), 120)
            time.sleep(hold_s)
        done.set()

    long_done, short_done = threading.Event(), threading.Event()
    for hold_s, done in ((8.0, long_done), (0.0, short_done)):
        threading.Thread(target=command, args=(hold_s, done), daemon=True).start()
    assert short_done.wait(150)
    assert [line for line in lines if "started one" in line] == [lines[0]] and len(lines) == 1
    keeper = keeper_alive(home)
    assert keeper is not None, "the keeper stopped while a command still used it"
    assert long_done.wait(150)
    _wait("the keeper to stop after the last command", lambda: _ended(keeper), 60)
    assert keeper_alive(home) is None
    assert not daemon_running(instance)  # its heartbeats are wiped: the next command starts a new one
    with instance_daemon(instance, lines.append):
        assert len(lines) == 2 and "started one" in lines[1]
    _wait("the last keeper to stop", lambda: keeper_alive(home) is None, 60)


def _ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
