"""The run launcher of a foundry node: each run in its own `dagster api execute_run` process, supervised by Dagster.

Dagster's `DefaultRunLauncher` starts runs inside the code server and cannot say whether a run's worker is alive, so
a run whose process was killed (SIGKILL, the OOM killer) stays "started" for ever and keeps its `gpu` pool slot.
This launcher starts the worker as a process of its own session (it outlives the daemon or webserver that launched
it) and records its pid and start time on the run, so:

- run monitoring (the daemon) asks `check_run_worker_health` and fails a run whose worker is gone; the daemon then
  frees the run's pool slots (`free_slots_after_run_end_seconds`) and run retries re-execute it from the failure;
- Terminate in the UI (and Ctrl-C of `foundry run`) sends the worker SIGTERM, which Dagster turns into a clean
  cancellation (the training child dies with it, see `crucible/isolation.py`).

The worker's own stdout/stderr go to `<log_dir>/<run_id>.log` (default: `logs/run_workers` in DAGSTER_HOME).
Set in `dagster.yaml` under `run_launcher`; one node (the pid is checked on the host that launched it).
"""

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil
from dagster import Field, StringSource
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

PID_TAG = "foundry/worker_pid"
STARTED_TAG = "foundry/worker_started"
"""The worker's process start time (seconds since the epoch, as psutil reports it): a reused pid does not match."""
HOST_TAG = "foundry/worker_host"


class ProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run as a `dagster api execute_run` process whose liveness run monitoring can check."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, log_dir: str | None = None) -> None:
        self._inst_data = inst_data
        self._log_dir = log_dir
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "log_dir": Field(
                StringSource,
                is_required=False,
                description="Folder of the run workers' stdout/stderr; default logs/run_workers in DAGSTER_HOME.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "ProcessRunLauncher":
        return cls(inst_data=inst_data, **config_value)

    def _log_folder(self) -> Path:
        folder = (
            Path(self._log_dir)
            if self._log_dir
            else Path(self._instance.root_directory) / "logs" / "run_workers"
        )
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(
                f"run {run.run_id} has no code origin: launch it from a code location, not in process"
            )
        origin = run.job_code_origin
        execute = ExecuteRunArgs(
            job_origin=origin,
            run_id=run.run_id,
            instance_ref=self._instance.get_ref(),
            set_exit_code_on_failure=True,
        )
        # the code location's own interpreter (a bare `dagster` need not be on the PATH of a daemon or a service)
        python = origin.executable_path or sys.executable
        command = [python, "-m", "dagster", "api", "execute_run", serialize_value(execute)]
        log_path = self._log_folder() / f"{run.run_id}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the launcher's process group: Ctrl-C of a `dagster dev` spares it
            )
        # reap the worker when it ends, so a finished worker is never mistaken for a live (zombie) one
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        started = psutil.Process(process.pid).create_time()
        self._instance.add_run_tags(
            run.run_id,
            {PID_TAG: str(process.pid), STARTED_TAG: f"{started:.3f}", HOST_TAG: socket.gethostname()},
        )
        self._instance.report_engine_event(
            f"Run worker started: pid {process.pid} on {socket.gethostname()}, output in {log_path}",
            run,
            cls=self.__class__,
        )

    def _worker(self, run: DagsterRun) -> tuple[psutil.Process | None, str]:
        """The run's live worker process, or None and why there is none."""
        pid = run.tags.get(PID_TAG)
        if pid is None:
            return None, "the run has no worker pid (it was not started by this launcher)"
        host = run.tags.get(HOST_TAG)
        if host and host != socket.gethostname():
            return None, f"the worker ran on {host}, not on this host"
        try:
            process = psutil.Process(int(pid))
            alive = process.status() != psutil.STATUS_ZOMBIE
            same = abs(process.create_time() - float(run.tags.get(STARTED_TAG, "0"))) < 1.0
        except psutil.NoSuchProcess:
            return None, f"worker pid {pid} is gone"
        if not alive or not same:
            return None, f"worker pid {pid} is gone"
        return process, f"worker pid {pid} is running"

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(HOST_TAG)
        if host and host != socket.gethostname():
            # only the daemon launches runs, so this is a second daemon elsewhere: do not fail what it cannot see
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"the worker runs on {host}; not checked from here"
            )
        if PID_TAG not in run.tags:  # e.g. a run executed in process by a test: nothing here to check
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker pid recorded")
        process, why = self._worker(run)
        if process is not None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, why, run_worker_id=str(process.pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, why)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None:
            return False
        process, why = self._worker(run)
        if process is None:
            self._instance.report_engine_event(f"Cannot terminate: {why}", run, cls=self.__class__)
            return False
        self._instance.report_run_canceling(run)
        os.kill(process.pid, signal.SIGTERM)  # Dagster's worker turns SIGTERM into a cancellation of the run
        return True
