"""Real training on the tiny Llama: one table over every registered strategy and both backends."""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from foundry_assets.crucible import train as train_module
from foundry_assets.crucible.hardware import HardwareReport, check_hardware
from foundry_assets.crucible.result import TrainResult
from foundry_assets.crucible.strategies import get_strategy, registered_names
from foundry_assets.crucible.train import train_adapter
from foundry_assets.errors import DataError, TrainingError

from .conftest import PARAMS, UNSLOTH

BACKENDS = ["unsloth", "peft"] if UNSLOTH else ["peft"]
CASES = [
    pytest.param(name, backend, id=f"{name}-{backend}") for backend in BACKENDS for name in registered_names()
]


@dataclass
class Spy:
    """What the loaded model looked like just before training (same objects the trainer updates)."""

    model: Any = None
    quantized: list[tuple[str, str]] = field(default_factory=list)
    magnitudes: dict[str, Any] = field(default_factory=dict)


def examples_for(name: str, request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    fixture = "preference_examples" if get_strategy(name).data_format == "preference" else "sft_examples"
    return list(request.getfixturevalue(fixture))


def cpu_report() -> HardwareReport:
    return check_hardware("dora", device="cpu")


# On a CUDA host Unsloth loads its GPU backend, so CPU training is not what runs there; test_train_on_cuda is.
cpu_only = pytest.mark.skipif(
    torch.cuda.is_available(), reason="CPU training path; a CUDA host runs the gpu tests"
)


def run(
    name: str,
    backend: str,
    out_dir: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    hardware: HardwareReport | None = None,
    model_path: Path | None = None,
) -> tuple[TrainResult, list[tuple[int, float]], Spy]:
    """Train `name` on `backend`, spying on the loaded model and collecting `on_log` calls."""
    spy = Spy()
    real_load = train_module.load_with_adapters

    def spying_load(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        import bitsandbytes as bnb

        model, tokenizer = real_load(*args, **kwargs)
        spy.model = model
        for module_name, module in model.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                spy.quantized.append((module_name, type(module.weight).__name__))
        spy.magnitudes = {
            n: p.detach().clone() for n, p in model.named_parameters() if "lora_magnitude_vector" in n
        }
        return model, tokenizer

    monkeypatch.setattr(train_module, "load_with_adapters", spying_load)
    logged: list[tuple[int, float]] = []
    result = train_adapter(
        model_path=model_path or request.getfixturevalue("tiny_model_dir"),
        strategy_name=name,
        train_examples=examples_for(name, request),
        out_dir=out_dir,
        params=PARAMS,
        hardware=hardware or cpu_report(),
        on_log=lambda step, loss: logged.append((step, loss)),
        backend=backend,  # type: ignore[arg-type]
    )
    return result, logged, spy


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cpu_only
@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), CASES)
def test_train_every_strategy(
    name: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    strategy = get_strategy(name)
    out = tmp_path / "adapter"
    result, logged, spy = run(name, backend, out, request, monkeypatch)

    # the run: backend recorded, loss logged at steps 10 and 20, every trainable tensor moved
    assert result.backend == backend and result.device == "cpu" and result.steps == PARAMS.max_steps
    assert [step for step, _ in logged] == [10, 20]
    assert logged == result.losses and all(loss > 0 for _, loss in logged)
    assert result.trainable_params > 0 and result.changed_params > 0
    assert result.gradient_checkpointing is False
    assert result.to_metadata()["final_loss"] == logged[-1][1]
    # the trainer's tokenized rows were checked: the answer and its end-of-turn token trained, no prompt token
    assert result.to_metadata()["chat_template"] == {
        "source": "base",
        "end_of_turn": "</s>",
        "rows_checked": 16,
    }

    # 4-bit base layers during training exactly where the strategy asks for them
    if strategy.load_in_4bit:
        assert spy.quantized, "no bitsandbytes Linear4bit layer in a 4-bit strategy's model"
        assert {kind for _, kind in spy.quantized} == {"Params4bit"}
        assert any(n.endswith("q_proj.base_layer") for n, _ in spy.quantized)
    else:
        assert spy.quantized == []

    # the folder: safetensors + config + tokenizer, no pickle, no trainer leftovers, sha256s that match
    names = {p.name for p in out.iterdir()}
    assert {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) or n.startswith("checkpoint") for n in names)
    assert all(p.is_file() for p in out.iterdir())
    assert result.adapter_dir == out
    assert result.files == {p.name: sha256(p) for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folder left behind"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["use_dora"] is strategy.use_dora
    assert config["r"] == PARAMS.rank and config["lora_alpha"] == PARAMS.rank
    assert set(config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    # PEFT keeps target_modules as a set (its order follows PYTHONHASHSEED): saved sorted, the same bytes every run
    assert config["target_modules"] == sorted(config["target_modules"])

    # DoRA: magnitude vectors saved and trained
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as tensors:
        saved = {key: tensors.get_tensor(key) for key in tensors.keys()}  # noqa: SIM118
    magnitude_keys = [k for k in saved if "lora_magnitude_vector" in k]
    if strategy.use_dora:
        assert len(magnitude_keys) == 14  # 7 projections x 2 layers
        before = {n.replace(".default.weight", ""): t for n, t in spy.magnitudes.items()}
        moved = [k for k in magnitude_keys if not saved[k].equal(before[k].to(saved[k].dtype))]
        assert moved, "DoRA magnitude vectors did not change"
    else:
        assert magnitude_keys == []


@cpu_only
@pytest.mark.slow
def test_retraining_replaces_the_folder_whole(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old pickle")
    result, _, _ = run("orpo", BACKENDS[0], out, request, monkeypatch)
    assert not (out / "stale.bin").exists()
    assert set(result.files) == {p.name for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "adapter_loss.png"]
    assert result.loss_plot == tmp_path / "adapter_loss.png"
    assert result.loss_plot.read_bytes().startswith(b"\x89PNG")


def test_examples_must_match_the_strategy(tmp_path: Path, sft_examples: list[dict[str, Any]]) -> None:
    with pytest.raises(DataError, match="prompt"):
        train_adapter(
            model_path=tmp_path,
            strategy_name="orpo",
            train_examples=sft_examples,
            out_dir=tmp_path / "out",
            params=PARAMS,
            hardware=cpu_report(),
        )
    with pytest.raises(DataError, match="No training examples"):
        train_adapter(
            model_path=tmp_path,
            strategy_name="dora",
            train_examples=[],
            out_dir=tmp_path / "out",
            params=PARAMS,
            hardware=cpu_report(),
        )
    assert not (tmp_path / "out").exists()


def test_unknown_backend_is_refused(tmp_path: Path, sft_examples: list[dict[str, Any]]) -> None:
    with pytest.raises(TrainingError, match="Unknown training backend"):
        train_adapter(
            model_path=tmp_path,
            strategy_name="dora",
            train_examples=sft_examples,
            out_dir=tmp_path / "out",
            params=PARAMS,
            hardware=cpu_report(),
            backend="jax",  # type: ignore[arg-type]
        )


@cpu_only
@pytest.mark.slow
def test_qlora_refuses_a_16bit_base(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the loader quietly hands back full-precision weights, qlora must not train under its name."""
    monkeypatch.setattr(train_module, "count_quantized_layers", lambda model: 0)
    with pytest.raises(TrainingError, match="no bitsandbytes Linear4bit"):
        run("qlora", BACKENDS[0], tmp_path / "out", request, monkeypatch)
    assert not (tmp_path / "out").exists()


_NO_UNSLOTH = """
import json, sys
sys.modules["unsloth"] = None  # what a host without Unsloth sees: `import unsloth` raises ImportError
import torch
torch.set_num_threads(1)
from pathlib import Path
from foundry_assets.crucible.hardware import check_hardware
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.train import train_adapter
from foundry_assets.errors import TrainingError

model, out, orpo, sft, params = sys.argv[1], Path(sys.argv[2]), *map(json.loads, sys.argv[3:6])
hardware = check_hardware("orpo", device="cpu")
result = train_adapter(model_path=model, strategy_name="orpo", train_examples=orpo, out_dir=out / "orpo",
                       params=TrainParams(**params), hardware=hardware)
try:
    train_adapter(model_path=model, strategy_name="dora", train_examples=sft, out_dir=out / "dora",
                  params=TrainParams(**params), hardware=hardware)
    refusal = None
except TrainingError as error:
    refusal = str(error)
print("RESULT" + json.dumps({"orpo": result.to_metadata(), "unsloth_loaded": "unsloth" in sys.modules
                              and sys.modules["unsloth"] is not None, "dora_refusal": refusal}))
"""


@cpu_only
@pytest.mark.slow
def test_auto_falls_back_to_peft_where_unsloth_is_missing(
    tmp_path: Path,
    tiny_model_dir: Path,
    sft_examples: list[dict[str, Any]],
    preference_examples: list[dict[str, Any]],
) -> None:
    """A fresh interpreter in which `import unsloth` fails: ORPO trains on PEFT with a recorded warning; SFT on
    the CPU is refused up front (TRL's SFT loss is a Triton kernel that only Unsloth reroutes on a CPU)."""
    import dataclasses
    import os
    import subprocess
    import sys

    args = [json.dumps(x) for x in (preference_examples, sft_examples, dataclasses.asdict(PARAMS))]
    done = subprocess.run(
        [sys.executable, "-c", _NO_UNSLOTH, str(tiny_model_dir), str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
    report = json.loads(line.removeprefix("RESULT"))
    assert report["unsloth_loaded"] is False
    orpo = report["orpo"]
    assert orpo["backend"] == "peft" and orpo["steps"] == PARAMS.max_steps
    assert [step for step, _ in orpo["losses"]] == [10, 20] and orpo["changed_params"] > 0
    assert any("Unsloth cannot be imported" in w for w in orpo["training_warnings"])
    assert "Unsloth cannot be imported" in done.stderr  # logged, not only recorded
    assert report["dora_refusal"].startswith("dora cannot train on the CPU with the PEFT backend")
    assert not (tmp_path / "dora").exists()


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", registered_names())
def test_train_on_cuda(
    name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real GPU path: pre-flight on the device, then Unsloth (bf16, or NF4 for 4-bit strategies) on CUDA."""
    hardware = check_hardware(name)
    assert hardware.device == "cuda"
    result, logged, spy = run(name, "auto", tmp_path / "adapter", request, monkeypatch, hardware)
    assert result.backend == ("unsloth" if UNSLOTH else "peft") and result.device == "cuda"
    assert [step for step, _ in logged] == [10, 20] and result.changed_params > 0
    assert bool(spy.quantized) is get_strategy(name).load_in_4bit
    assert {"adapter_model.safetensors", "adapter_config.json"} <= set(result.files)


def _saved_magnitudes_moved(out: Path, spy: Spy) -> list[str]:
    with safe_open(str(out / "adapter_model.safetensors"), framework="pt") as tensors:
        saved = {key: tensors.get_tensor(key) for key in tensors.keys()}  # noqa: SIM118
    before = {n.replace(".default.weight", ""): t.cpu() for n, t in spy.magnitudes.items()}
    keys = [k for k in saved if "lora_magnitude_vector" in k]
    assert keys and set(keys) <= set(before)
    return [k for k in keys if not saved[k].equal(before[k].to(saved[k].dtype))]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", ["qlora", "dora"])
def test_real_shape_model_on_cuda(
    name: str,
    tmp_path: Path,
    real_shape_model_dir: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A random-init Llama-3.2-1B-shaped model on the GPU: qlora trains over NF4 layers, DoRA trains magnitudes."""
    from foundry_assets.crucible.vram import KNOWN_ARCHITECTURES

    layers = KNOWN_ARCHITECTURES["llama-3.2-1b"].num_layers
    hardware = check_hardware(name, device="cuda")
    out = tmp_path / "adapter"
    result, logged, spy = run(name, "unsloth", out, request, monkeypatch, hardware, real_shape_model_dir)
    assert result.device == "cuda" and result.backend == "unsloth" and result.steps == PARAMS.max_steps
    assert [step for step, _ in logged] == [10, 20] and result.changed_params > 0
    assert result.peak_memory_gib is not None and result.peak_memory_gib > 1.0
    assert result.tokens > 0 and result.tokens_per_s is not None and result.tokens_per_s > 0
    if name == "qlora":
        assert len(spy.quantized) == 7 * layers, spy.quantized[:3]
        assert {kind for _, kind in spy.quantized} == {"Params4bit"}
        lora = [n for n, p in spy.model.named_parameters() if p.requires_grad]
        assert lora and all("lora_" in n for n in lora)
    else:
        assert spy.quantized == []
        moved = _saved_magnitudes_moved(out, spy)
        assert len(moved) >= 7 * layers // 2, f"only {len(moved)} of {7 * layers} magnitude vectors moved"
