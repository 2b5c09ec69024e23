"""Training in its own process: results and losses come back, errors keep their type, a dead child is a clean failure,
and nothing Unsloth does reaches the process that merges and examines afterwards."""

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.isolation import train_adapter_isolated
from foundry_assets.crucible.result import TrainResult
from foundry_assets.errors import DataError, TrainingError

from .conftest import PARAMS


def _kwargs(
    model_dir: Path, out_dir: Path, examples: list[dict[str, str]], **params: object
) -> dict[str, object]:
    return {
        "model_path": model_dir,
        "strategy_name": "lora",
        "train_examples": examples,
        "out_dir": out_dir,
        "params": dataclasses.replace(PARAMS, **params),
        "hardware": check_hardware("lora", device="cpu"),
    }


def test_result_and_losses_come_back_from_the_training_process(
    tiny_model_dir: Path, tmp_path: Path, sft_examples: list[dict[str, str]]
) -> None:
    logged: list[tuple[int, float]] = []
    result = train_adapter_isolated(
        **_kwargs(tiny_model_dir, tmp_path / "adapter", sft_examples),
        on_log=lambda step, loss: logged.append((step, loss)),
    )
    assert isinstance(result, TrainResult)
    # streamed to the parent in order, as the trainer logged them
    assert [step for step, _ in logged] == [10, 20]
    assert logged == result.losses
    assert result.changed_params > 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_foundry_error_in_the_child_keeps_its_type_and_message(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="No training examples"):
        train_adapter_isolated(**_kwargs(tiny_model_dir, tmp_path / "adapter", []))
    assert not (tmp_path / "adapter").exists()


def test_a_killed_training_process_is_a_clean_failure(
    tiny_model_dir: Path, tmp_path: Path, sft_examples: list[dict[str, str]]
) -> None:
    import multiprocessing

    def kill_child(step: int, loss: float) -> None:  # at the first loss record, the child is mid-training
        for child in multiprocessing.active_children():
            if child.name == "foundry-crucible" and child.pid is not None:
                child.kill()

    with pytest.raises(TrainingError, match="was killed by SIGKILL"):
        train_adapter_isolated(
            **_kwargs(tiny_model_dir, tmp_path / "adapter", sft_examples, max_steps=400), on_log=kill_child
        )
    assert not (tmp_path / "adapter").exists()
    assert not [c for c in multiprocessing.active_children() if c.name == "foundry-crucible"]


_FRESH_PROCESS = """
import json, sys
from pathlib import Path
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.isolation import train_adapter_isolated
from foundry_assets.crucible.params import TrainParams

params = TrainParams(rank=8, alpha=None, dropout=0.0, learning_rate=5e-3, max_steps=10, max_seq_length=64,
                     logging_steps=10, seed=0, batch_size=4, grad_accum=1)
examples = [{"prompt": [{"role": "user", "content": f"what is {i} plus {i}?"}],
             "completion": [{"role": "assistant", "content": f"{2 * i}."}]} for i in range(16)]
result = train_adapter_isolated(model_path=Path(sys.argv[1]), strategy_name="lora", train_examples=examples,
                                out_dir=Path(sys.argv[2]), params=params, hardware=check_hardware("lora", device="cpu"))
print(json.dumps({"backend": result.backend, "steps": result.steps,
                  "patched_here": sorted(m for m in sys.modules if m.split(".")[0] in ("unsloth", "unsloth_zoo", "trl"))}))
"""


def test_unsloth_never_loads_in_the_process_that_merges_and_examines(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """In a fresh interpreter (this test process imported Unsloth in conftest): train through the isolation, then
    check that Unsloth, unsloth_zoo and TRL were imported only in the child, so transformers here is unpatched."""
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tiny_model_dir), str(tmp_path / "adapter")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["steps"] == 10
    assert outcome["patched_here"] == []
    if outcome["backend"] != "unsloth":
        pytest.skip("unsloth is not installed: nothing could leak")


def test_the_parent_keeps_streaming_while_the_child_trains(
    tiny_model_dir: Path, tmp_path: Path, sft_examples: list[dict[str, str]]
) -> None:
    """`on_log` runs on the caller's thread (the Dagster step's), not on a helper thread."""
    threads: set[int] = set()
    train_adapter_isolated(
        **_kwargs(tiny_model_dir, tmp_path / "adapter", sft_examples),
        on_log=lambda step, loss: threads.add(threading.get_ident()),
    )
    assert threads == {threading.get_ident()}


_AFTER_TRAINING_ON_CUDA = """
import json, sys
from pathlib import Path
import torch
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.isolation import train_adapter_isolated
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.train import train_adapter

model_dir, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
params = TrainParams(rank=8, alpha=None, dropout=0.0, learning_rate=5e-3, max_steps=10, max_seq_length=64,
                     logging_steps=10, seed=0, batch_size=4, grad_accum=1)
examples = [{"prompt": [{"role": "user", "content": f"what is {i} plus {i}?"}],
             "completion": [{"role": "assistant", "content": f"{2 * i}."}]} for i in range(16)]
train = train_adapter_isolated if mode == "isolated" else train_adapter
train(model_path=model_dir, strategy_name="lora", train_examples=examples, out_dir=out, params=params,
      hardware=check_hardware("lora", device="cuda"))
from transformers import AutoModelForCausalLM  # what merge and exam do next in the same process
model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
try:
    model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    print(json.dumps({"cpu_forward": "ok"}))
except RuntimeError as error:
    print(json.dumps({"cpu_forward": str(error)[:200]}))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_after_training_on_cuda_the_step_process_still_loads_models_anywhere(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The GPU-node crash: Unsloth, once it has loaded a model on CUDA, leaves transformers' Llama rotary embedding
    patched with CUDA tables, so a later CPU load in that process fails. In-process training shows the hazard (or
    that this Unsloth no longer has it); training through the isolation must never have it."""
    outcomes = {}
    for mode in ("in_process", "isolated"):
        done = subprocess.run(
            [sys.executable, "-c", _AFTER_TRAINING_ON_CUDA, str(tiny_model_dir), str(tmp_path / mode), mode],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outcomes[mode] = json.loads(done.stdout.strip().splitlines()[-1])["cpu_forward"]
    print(f"CPU forward after training on CUDA: {outcomes}")
    assert outcomes["isolated"] == "ok"
