"""One job per GPU on a node: a run claims a free GPU for its whole life and sees only that one.

A claim is an exclusive `flock` on `<lock_dir>/gpu-<id>.lock`. The kernel releases it when the claiming process ends,
however it ends (SIGKILL, the OOM killer, a lost node), so a dead run never keeps a GPU — unlike a slot counter that
someone has to free by hand. The claimed GPU is exported as `CUDA_VISIBLE_DEVICES` before anything initialises CUDA,
so every stage of the run (curation, the training process, merge, exam) uses it as `cuda:0`, and N runs on a node
with N GPUs train side by side (the Dagster `gpu` pool's limit is the ceiling the instance enforces; see README).

The node's GPUs are `FOUNDRY_GPUS` (comma-separated ids; how an operator carves a node up, and how tests stand in
fake slots on a CPU machine), else the entries of `CUDA_VISIBLE_DEVICES` (a pod that was given some GPUs), else every
device torch can count. A node with none claims nothing.
"""

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from foundry_assets.errors import HardwareIncompatibleError

GPUS_ENV = "FOUNDRY_GPUS"


def node_gpus() -> list[str]:
    """The GPU ids this node offers to foundry runs (empty on a CPU node)."""
    for variable in (GPUS_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(variable)
        if value is not None:
            return [part.strip() for part in value.split(",") if part.strip() and part.strip() != "-1"]
    try:
        import torch
    except ImportError:
        return []
    return [str(index) for index in range(torch.cuda.device_count())]


@dataclass
class GpuClaim:
    """A GPU held by this process until `release()` (or until the process ends)."""

    gpu: str
    lock_path: Path
    _fd: int = field(repr=False)

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _try_claim(lock_path: Path, owner: str) -> int | None:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(
        fd, f"{owner}\n".encode()
    )  # who holds it, for `cat` by an operator; the lock itself is the flock
    return fd


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def claim_gpu(
    lock_dir: Path,
    gpus: list[str],
    *,
    owner: str,
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    on_wait: Callable[[str], None] | None = None,
) -> GpuClaim:
    """Claim the first free GPU of `gpus`, waiting up to `wait_s` seconds for one; HardwareIncompatibleError after."""
    if not gpus:
        raise HardwareIncompatibleError("claim_gpu got no GPUs to claim")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        for gpu in gpus:
            lock_path = lock_dir / f"gpu-{gpu}.lock"
            fd = _try_claim(lock_path, owner)
            if fd is not None:
                return GpuClaim(gpu, lock_path, fd)
        holders = "; ".join(f"GPU {g}: {_holder(lock_dir / f'gpu-{g}.lock')}" for g in gpus)
        if time.monotonic() >= deadline:
            raise HardwareIncompatibleError(
                f"every GPU of this node is claimed by another run ({holders}); waited {wait_s:g} s. Wait for one to "
                f"finish, or lower the Dagster 'gpu' pool limit to the node's {len(gpus)} GPU(s) so runs queue there"
            )
        if on_wait is not None and not told:
            on_wait(f"all {len(gpus)} GPU(s) are claimed ({holders}); waiting up to {wait_s:g} s")
            told = True
        time.sleep(poll_s)


def gpu_holders(lock_dir: Path, gpus: list[str]) -> dict[str, str | None]:
    """Each GPU and who holds it now (the claim file's owner line), None where it is free. Claims nothing."""
    holders: dict[str, str | None] = {}
    for gpu in gpus:
        lock_path = lock_dir / f"gpu-{gpu}.lock"
        if not lock_path.exists():
            holders[gpu] = None
            continue
        fd = os.open(lock_path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when no run holds it exclusively
            holders[gpu] = None
        except BlockingIOError:
            holders[gpu] = _holder(lock_path)
        finally:
            os.close(fd)
    return holders


def cuda_initialized() -> bool:
    """Whether this process already initialised CUDA (then CUDA_VISIBLE_DEVICES can no longer pin it)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())
