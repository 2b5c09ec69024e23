"""The VRAM estimator against the H100 calibration, and `foundry preflight` (Story B) with no GPU."""

import json
from pathlib import Path

import pytest

from foundry_assets.cli import main
from foundry_assets.crucible.hardware import decide
from foundry_assets.crucible.vram import KNOWN_ARCHITECTURES, estimate_vram, job_shape, resolve_architecture
from foundry_assets.errors import HardwareIncompatibleError

ORPO_REFUSAL = "Insufficient VRAM for ORPO. Use Gradient Checkpointing or upgrade node."
# Peak allocated GiB measured on an NVIDIA H100 80GB HBM3 (torch 2.11, unsloth 2026.10.9; README calibration table):
# Llama-3.2-1B shape, random init, rank 16, through the crucible (benchmarks/gpu_suite.py).
MEASURED = [
    ("lora", 2048, 4, False, 10.79),
    ("qlora", 2048, 4, False, 9.47),
    ("lora", 512, 1, False, 3.30),
    ("orpo", 512, 2, False, 4.86),
    ("dora", 1024, 2, True, 3.46),
    ("dora", 2048, 4, False, 21.19),  # padded DoRA (the crucible's default since the DoRA fix)
    ("lora", 2048, 4, True, 3.32),
    ("qlora", 1024, 2, True, 1.53),
    ("orpo", 1024, 2, True, 3.13),
]


# Llama-3.1-8B shape, random init, rank 16, 4 crucible steps per fresh process, full-length rows, on an NVIDIA H200
# (torch 2.11 cu130, unsloth 2026.10.9, 2026-11-30; benchmarks/gpu_vram8b.py, table in benchmarks/RESULTS.md).
MEASURED_8B = [
    ("lora", 1024, 2, False, 23.38),
    ("qlora", 1024, 2, False, 13.84),
    ("dora", 1024, 2, False, 32.49),
    ("orpo", 512, 2, False, 23.59),
]


@pytest.mark.parametrize(("method", "seq", "batch", "gc", "measured"), MEASURED_8B)
def test_estimate_within_15_percent_of_the_h200_at_8b(
    method: str, seq: int, batch: int, gc: bool, measured: float
) -> None:
    arch = KNOWN_ARCHITECTURES["llama-3.1-8b"]
    estimate = estimate_vram(
        arch, method=method, rank=16, batch_size=batch, seq_len=seq, gradient_checkpointing=gc
    )
    assert estimate.total_gib == pytest.approx(measured, rel=0.15)


@pytest.mark.parametrize(("method", "seq", "batch", "gc", "measured"), MEASURED)
def test_estimate_within_15_percent_of_the_h100(
    method: str, seq: int, batch: int, gc: bool, measured: float
) -> None:
    arch = KNOWN_ARCHITECTURES["llama-3.2-1b"]
    estimate = estimate_vram(
        arch, method=method, rank=16, batch_size=batch, seq_len=seq, gradient_checkpointing=gc
    )
    assert estimate.total_gib == pytest.approx(measured, rel=0.15)
    assert estimate.required_gb > estimate.total_gib * 1024**3 / 10**9


def test_local_config_wins_and_unknown_names_are_refused(tmp_path: Path) -> None:
    config = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 512}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    arch, source = resolve_architecture("acme/secret-model", str(tmp_path))
    assert arch.hidden_size == 64 and source.endswith("config.json")
    assert (
        resolve_architecture("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit")[0]
        == KNOWN_ARCHITECTURES["llama-3.1-8b"]
    )
    with pytest.raises(HardwareIncompatibleError, match="Cannot size 'acme/secret-model'"):
        resolve_architecture("acme/secret-model")


def test_prequantized_base_is_sized_at_4_bits() -> None:
    kwargs = {"model_path": None, "method": "orpo", "rank": 64, "batch_size": 4, "seq_len": 512}
    four = job_shape(base_model="unsloth/llama-3-8b-bnb-4bit", **kwargs).estimate(
        gradient_checkpointing=False
    )
    sixteen = job_shape(base_model="meta-llama/Meta-Llama-3-8B", **kwargs).estimate(
        gradient_checkpointing=False
    )
    assert four.weights_gib < sixteen.weights_gib / 2


def test_decide_uses_the_estimate_and_checkpointing() -> None:
    shape = job_shape(
        base_model="llama-3.2-1b", model_path=None, method="dora", rank=16, batch_size=4, seq_len=2048
    )
    assert decide("dora", free_gb=40, total_gb=40, allow_gradient_checkpointing=False, job=shape).fits
    refused = decide("dora", free_gb=16, total_gb=16, allow_gradient_checkpointing=False, job=shape)
    assert not refused.fits and refused.refusal is not None
    assert refused.refusal.startswith("Insufficient VRAM for DORA.") and "16.0 GB free" in refused.refusal
    with_gc = decide("dora", free_gb=16, total_gb=16, allow_gradient_checkpointing=True, job=shape)
    assert with_gc.fits and with_gc.gradient_checkpointing and with_gc.estimate is not None
    tiny = decide("dora", free_gb=2, total_gb=2, allow_gradient_checkpointing=True, job=shape)
    assert not tiny.fits and "even with gradient checkpointing" in (tiny.refusal or "")


def test_preflight_story_b(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(Path(__file__).resolve().parents[2] / "examples" / "reference-manifest.yaml")
    assert main(["preflight", manifest, "--vram-gb", "16"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"foundry: {ORPO_REFUSAL}")
    assert "16.0 GB free" in err and "GiB allocated" in err and "allow_gradient_checkpointing" in err
    assert main(["preflight", manifest, "--vram-gb", "80"]) == 0
    assert "FITS on 80.0 GB" in capsys.readouterr().out


def test_preflight_unknown_model_and_bad_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "job_id: j1\nbase_model: acme/unknown-7b\nmethod_config: {type: lora}\n"
        "publish_target: {registry: /tmp/r, tag: v1}\n"
    )
    assert main(["preflight", str(manifest), "--vram-gb", "24"]) == 2
    assert "Cannot size 'acme/unknown-7b'" in capsys.readouterr().err
    manifest.write_text("job_id: j1\n")
    assert main(["preflight", str(manifest), "--vram-gb", "24"]) == 2


GOOD_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 512}  # fmt: skip


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({**GOOD_CONFIG, "num_hidden_layers": -5}, "num_hidden_layers"),  # printed FITS
        ({**GOOD_CONFIG, "hidden_size": "wide"}, "hidden_size"),  # a traceback (int('wide'))
        ({**GOOD_CONFIG, "num_attention_heads": 0}, "num_attention_heads"),  # ZeroDivisionError
        ({**GOOD_CONFIG, "num_key_value_heads": 8}, "num_key_value_heads"),  # more KV heads than heads
        ({**GOOD_CONFIG, "vocab_size": 10**400}, "vocab_size"),
        ({**GOOD_CONFIG, "hidden_size": 2}, "hidden_size"),  # head dim 0
        ([1, 2], "config.json"),
        ("{not json", "config.json"),
    ],
)
def test_preflight_with_a_malformed_config_is_a_short_named_error(
    config: object, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`foundry preflight` printed a traceback for a malformed config.json, or "FITS" for `num_hidden_layers: -5`."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "job_id: j1\nbase_model: acme/x\nmodel_path: model\nmethod_config: {type: lora}\n"
        "publish_target: {registry: /tmp/r, tag: v1}\n"
    )
    assert main(["preflight", str(manifest), "--vram-gb", "24"]) == 2
    captured = capsys.readouterr()
    assert "FITS" not in captured.out and "Traceback" not in captured.err
    [line] = captured.err.splitlines()
    assert line.startswith("foundry: ") and named in line and "config.json" in line and len(line) < 500


@pytest.mark.parametrize("vram", ["-5", "0", "nan", "inf"])
def test_preflight_refuses_a_card_size_that_is_no_size(vram: str, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(Path(__file__).resolve().parents[2] / "examples" / "reference-manifest.yaml")
    with pytest.raises(SystemExit) as info:
        main(["preflight", manifest, "--vram-gb", vram])
    assert info.value.code == 2 and "--vram-gb" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lora", "dora", "orpo"])
def test_token_budget_sizes_the_largest_micro_batch_it_can_form(method: str) -> None:
    """With token-budget batching a micro-batch holds at most token_budget positions (padding included; a preference
    pair's chosen and rejected together), whatever batch_size says: the estimate is that of one such micro-batch."""
    arch = KNOWN_ARCHITECTURES["llama-3.2-1b"]
    budget = estimate_vram(
        arch,
        method=method,
        rank=16,
        batch_size=4,
        seq_len=2048,
        gradient_checkpointing=False,
        token_budget=16384,
    )
    rows = 1 if method != "orpo" else 2
    same = estimate_vram(
        arch, method=method, rank=16, batch_size=8 // rows, seq_len=2048, gradient_checkpointing=False
    )
    assert budget.batch_tokens == same.batch_tokens == 16384
    assert budget.total_gib == pytest.approx(same.total_gib)
    small = estimate_vram(
        arch,
        method=method,
        rank=16,
        batch_size=4,
        seq_len=2048,
        gradient_checkpointing=False,
        token_budget=4096,
    )
    assert small.activations_gib == pytest.approx(budget.activations_gib / 4)


def test_preflight_sizes_a_token_budget_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from foundry_assets.crucible.hardware import manifest_job_shape
    from foundry_assets.manifest import parse_manifest

    def shape(method_config: dict[str, object]) -> object:
        return manifest_job_shape(
            parse_manifest(
                {
                    "job_id": "j",
                    "base_model": "meta-llama/Llama-3.2-1B",
                    "method_config": {"type": "lora", "max_seq_length": 2048, **method_config},
                    "publish_target": {"registry": str(tmp_path), "tag": "v1"},
                    "compute": {"batch_size": 8},
                }
            )
        ).estimate(gradient_checkpointing=False)

    assert shape({}).batch_tokens == 8 * 2048
    assert shape({"batching": "packed", "token_budget": 4096}).batch_tokens == 4096
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "job_id: j\nbase_model: meta-llama/Llama-3.2-1B\npublish_target: {registry: /tmp/r, tag: v1}\n"
        "method_config: {type: dora, max_seq_length: 2048, batching: length_grouped, token_budget: 65536}\n"
    )
    assert main(["preflight", str(manifest), "--vram-gb", "24"]) == 1
    err = capsys.readouterr().err
    assert "65,536-token micro-batches" in err and "method_config.token_budget" in err
