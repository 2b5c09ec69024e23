"""Resumable training on the CPU: a run SIGKILLed after a checkpoint resumes; another lot's checkpoint never does."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from foundry_assets.crucible.checkpoints import CheckpointPlan, find_resume_point, prepare, stored_lot
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.train import train_adapter

from .test_train import PARAMS, cpu_only

RESUME_PARAMS = replace(PARAMS, max_steps=30, logging_steps=1)
EVERY = 4

_CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from foundry_assets.crucible.backend import ensure_unsloth_first
from foundry_assets.crucible.checkpoints import CheckpointPlan, prepare
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.train import train_adapter
from foundry_assets.crucible.hardware import check_hardware

ensure_unsloth_first()
model, out, folder, lot, every, params, examples = sys.argv[1:8]
plan = prepare(CheckpointPlan(Path(folder), int(every), lot))
train_adapter(model_path=model, strategy_name="lora", train_examples=json.loads(examples), out_dir=Path(out),
              params=TrainParams(**json.loads(params)), hardware=check_hardware("lora", device="cpu"),
              on_log=lambda step, loss: time.sleep(0.25), checkpoints=plan)  # slow enough to be killed mid-run
print("FINISHED")
"""


def _kill_after_checkpoint(args: list[str], folder: Path, env: dict[str, str]) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    deadline = time.monotonic() + 240
    plan = CheckpointPlan(folder, EVERY, args[3])
    while time.monotonic() < deadline and child.poll() is None:
        point = find_resume_point(plan)
        if point is not None and point.step >= EVERY:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.1)
    output = child.communicate(timeout=60)[0].decode(errors="replace")
    assert child.returncode == -signal.SIGKILL, f"child was not killed mid-training:\n{output[-3000:]}"
    assert "FINISHED" not in output


@cpu_only
@pytest.mark.slow
def test_killed_run_resumes_and_another_lot_does_not(
    tmp_path: Path, tiny_model_dir: Path, sft_examples: list[dict[str, str]]
) -> None:
    folder = tmp_path / "job" / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    args = [
        str(tiny_model_dir),
        str(tmp_path / "job" / "adapter"),
        str(folder),
        "lot-A",
        str(EVERY),
        json.dumps(asdict(RESUME_PARAMS)),
        json.dumps(sft_examples),
    ]
    _kill_after_checkpoint(args, folder, env)
    assert stored_lot(folder) == "lot-A"
    killed_at = find_resume_point(CheckpointPlan(folder, EVERY, "lot-A"))
    assert killed_at is not None and 0 < killed_at.step < RESUME_PARAMS.max_steps
    other_lot = tmp_path / "other" / "checkpoints"
    shutil.copytree(folder, other_lot)  # the same checkpoints, presented to a job of another lot number

    hardware = check_hardware("lora", device="cpu")
    resumed = train_adapter(
        model_path=tiny_model_dir,
        strategy_name="lora",
        train_examples=sft_examples,
        out_dir=tmp_path / "job" / "adapter",
        params=RESUME_PARAMS,
        hardware=hardware,
        checkpoints=prepare(CheckpointPlan(folder, EVERY, "lot-A")),
    )
    assert resumed.resumed_from_step >= killed_at.step > 0
    assert resumed.steps == RESUME_PARAMS.max_steps
    assert resumed.steps_run == RESUME_PARAMS.max_steps - resumed.resumed_from_step < RESUME_PARAMS.max_steps
    assert resumed.losses and resumed.losses[0][0] > resumed.resumed_from_step
    assert (tmp_path / "job" / "adapter" / "adapter_model.safetensors").is_file()
    assert not folder.exists(), "checkpoints (pickled optimizer state) left behind after publishing"

    fresh = train_adapter(
        model_path=tiny_model_dir,
        strategy_name="lora",
        train_examples=sft_examples,
        out_dir=tmp_path / "other" / "adapter",
        params=RESUME_PARAMS,
        hardware=hardware,
        checkpoints=prepare(CheckpointPlan(other_lot, EVERY, "lot-B")),
    )
    assert fresh.resumed_from_step == 0 and fresh.steps_run == RESUME_PARAMS.max_steps
    assert any("lot-A" in w and "lot-B" in w for w in fresh.warnings)
