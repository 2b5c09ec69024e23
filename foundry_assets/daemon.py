"""One dagster-daemon per instance for `foundry run` on a node with no daemon service, shared by every command that
needs it and stopped when the last of them ends.

Each command used to start its own daemon when none heartbeated. Two `foundry run` commands started together (two jobs
on a two-GPU node) then ran two daemons on one instance: both dequeued the same run, the second worker found the run
already started and exited, and run monitoring failed the run that was still training (seen on the H200 node). Now:

- a command that needs the daemon holds a shared `flock` on `DAGSTER_HOME/.foundry-daemon.users` for as long as it
  follows its run (the kernel drops it when the command ends or is killed);
- starting is serialized by an exclusive `flock` on `.foundry-daemon.start`: a command starts a keeper only when no
  daemon heartbeats (a `dagster dev` or a service counts) and no keeper is alive (`.foundry-daemon.pid`);
- the keeper (`python -m foundry_assets.daemon DAGSTER_HOME`) runs `dagster-daemon run` and, every second, tries the
  users lock exclusively; once no command holds it, it stops the daemon, wipes its heartbeats (so no later command
  takes the last beat for a live daemon) and removes its pid file before it lets go of the lock. A command arriving
  meanwhile waits on the users lock, then starts a new keeper.
"""

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import psutil

from foundry_assets.processes import die_with_parent
from foundry_assets.runner import WORKSPACE_YAML

DAEMONS_NEEDED = ("QUEUED_RUN_COORDINATOR", "MONITORING")
"""The daemons a submitted run depends on: the queue that launches it and the monitor that fails it if its worker dies."""
HEARTBEAT_FRESH_S = 45.0
USERS, START, PID = ".foundry-daemon.users", ".foundry-daemon.start", ".foundry-daemon.pid"
POLL_S = 1.0


def daemon_running(instance: dg.DagsterInstance) -> bool:
    """Whether a dagster-daemon serving this instance's queue and run monitoring has sent a heartbeat lately."""
    beats = instance.get_daemon_heartbeats()
    now = time.time()
    return all(t in beats and now - beats[t].timestamp < HEARTBEAT_FRESH_S for t in DAEMONS_NEEDED)


def keeper_alive(home: Path) -> int | None:
    """The pid of this instance's keeper if it is running (its pid file names a live process started then)."""
    try:
        pid, started = (home / PID).read_text().split()
        process = psutil.Process(int(pid))
        if abs(process.create_time() - float(started)) < 1.0 and process.status() != psutil.STATUS_ZOMBIE:
            return process.pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def _start_keeper(home: Path) -> int:
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "daemon.log").open("ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "foundry_assets.daemon", str(home)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command that started it while others still use it
            env={**os.environ, "DAGSTER_HOME": str(home)},
        )
    (home / PID).write_text(f"{keeper.pid} {psutil.Process(keeper.pid).create_time():.3f}\n")
    return keeper.pid


@contextlib.contextmanager
def instance_daemon(instance: dg.DagsterInstance, say: Callable[[str], None]) -> Iterator[None]:
    """The instance's daemon for as long as the block runs: the one already running (`dagster dev`, a service, or the
    keeper another command started), or a keeper started here, which stops once no command uses it."""
    home = Path(instance.root_directory)
    with open(home / USERS, "a+") as users:
        fcntl.flock(users, fcntl.LOCK_SH)  # waits while a keeper is shutting down
        with open(home / START, "a+") as start:
            fcntl.flock(start, fcntl.LOCK_EX)
            if not daemon_running(instance) and keeper_alive(home) is None:
                pid = _start_keeper(home)
                say(
                    f"no dagster-daemon was serving {home}: started one (keeper pid {pid}); it stops when the last "
                    "foundry command using it ends"
                )
        yield


def keep(home: Path) -> None:
    """Run the instance's daemon until no command holds the users lock, then stop it and clean up."""
    with open(home / USERS, "a+") as users:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", str(WORKSPACE_YAML)],
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,  # a killed keeper takes its daemon with it
        )
        try:
            while daemon.poll() is None:
                time.sleep(POLL_S)
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                break  # no command uses the daemon any more; the lock is held until the cleanup is done
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            with dg.DagsterInstance.get() as instance:
                instance.wipe_daemon_heartbeats()
            (home / PID).unlink(missing_ok=True)


if __name__ == "__main__":
    keep(Path(sys.argv[1]))
