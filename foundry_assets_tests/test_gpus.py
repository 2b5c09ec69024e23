"""GPU claims: one run per GPU, released by the kernel when the claiming process dies, however it dies."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundry_assets.errors import HardwareIncompatibleError
from foundry_assets.gpus import claim_gpu, node_gpus

HOLD = """
import sys, time
from pathlib import Path
from foundry_assets.gpus import claim_gpu
claim = claim_gpu(Path(sys.argv[1]), sys.argv[2].split(","), owner="holder")
print(claim.gpu, flush=True)
time.sleep(600)
"""


def hold(lock_dir: Path, gpus: str) -> tuple[subprocess.Popen[str], str]:
    """Another process that claims a GPU of `gpus` and keeps it; returns it and the GPU it holds."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_dir), gpus], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def test_node_gpus_come_from_foundry_gpus_then_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert node_gpus() == ["2", "3"]
    monkeypatch.setenv("FOUNDRY_GPUS", "0, 1")
    assert node_gpus() == ["0", "1"]
    monkeypatch.setenv("FOUNDRY_GPUS", "")
    assert node_gpus() == []


def test_each_claim_gets_its_own_gpu_and_a_full_node_says_who_holds_them(tmp_path: Path) -> None:
    first = claim_gpu(tmp_path, ["0", "1"], owner="run a")
    second = claim_gpu(tmp_path, ["0", "1"], owner="run b")
    assert (first.gpu, second.gpu) == ("0", "1")
    with pytest.raises(HardwareIncompatibleError, match=r"GPU 0: run a; GPU 1: run b"):
        claim_gpu(tmp_path, ["0", "1"], owner="run c", wait_s=0)
    first.release()
    assert claim_gpu(tmp_path, ["0", "1"], owner="run c").gpu == "0"


def test_a_waiting_run_gets_the_gpu_when_its_holder_ends(tmp_path: Path) -> None:
    holder, gpu = hold(tmp_path, "0")
    assert gpu == "0"
    waits: list[str] = []
    try:
        started = time.monotonic()
        subprocess.Popen(["sh", "-c", f"sleep 1; kill -TERM {holder.pid}"])
        claim = claim_gpu(tmp_path, ["0"], owner="next", wait_s=60, poll_s=0.1, on_wait=waits.append)
    finally:
        holder.kill()
        holder.wait()
    assert claim.gpu == "0" and time.monotonic() - started >= 0.5
    assert waits and "GPU 0: holder" in waits[0]


def test_a_killed_run_never_keeps_its_gpu(tmp_path: Path) -> None:
    holder, gpu = hold(tmp_path, "0,1")
    assert claim_gpu(tmp_path, ["0", "1"], owner="other").gpu != gpu  # held: the other GPU is given
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert claim_gpu(tmp_path, [gpu], owner="after the kill", wait_s=0).gpu == gpu  # no one had to free it


def test_foundry_gpus_shows_who_holds_each_gpu_and_sizes_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundry_assets.cli import main

    monkeypatch.setenv("FOUNDRY_GPUS", "0,1")
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "foundry"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    holder, held = hold(tmp_path / "foundry" / "locks", "0")
    try:
        assert held == "0"
        assert main(["gpus", "--set-pool"]) == 0
    finally:
        holder.kill()
        holder.wait()
    out = capsys.readouterr().out
    assert "GPU 0: holder" in out and "GPU 1: free" in out
    assert "pool 'gpu'" in out and "limit 2" in out  # one training per GPU, two GPUs
    assert main(["gpus"]) == 0
    assert "GPU 0: free" in capsys.readouterr().out  # the holder is gone, so is its claim
