"""The hardware pre-flight's decision table, with `mem_get_info` injected, plus one real reading on a GPU."""

from collections.abc import Callable

import pytest

from foundry_assets.crucible.hardware import BYTES_PER_GB, HardwareReport, check_hardware
from foundry_assets.crucible.strategies import registered_names
from foundry_assets.errors import HardwareIncompatibleError, UnknownStrategyError

ORPO_REFUSAL = "Insufficient VRAM for ORPO. Use Gradient Checkpointing or upgrade node."


def gpu(free_gb: float, total_gb: float = 80.0) -> Callable[[], tuple[int, int]]:
    """A fake `torch.cuda.mem_get_info` reporting (free, total) in decimal GB."""
    return lambda: (int(free_gb * BYTES_PER_GB), int(total_gb * BYTES_PER_GB))


# method, free GB, allow gradient checkpointing, strict → expected gradient checkpointing, or an error
DECISIONS = [
    pytest.param("orpo", 16, False, True, "error", id="orpo-16gb-refused"),
    pytest.param("orpo", 16, True, True, True, id="orpo-16gb-allow-gc"),
    pytest.param("orpo", 40, False, True, False, id="orpo-40gb-ok"),
    pytest.param("orpo", 40, True, True, False, id="orpo-40gb-gc-not-needed"),
    pytest.param("orpo", 24, False, True, False, id="orpo-at-floor-ok"),
    pytest.param("dora", 16, False, True, False, id="dora-16gb-ok"),
    pytest.param("qlora", 4, False, True, False, id="qlora-4gb-ok"),
    pytest.param("orpo", 16, False, False, False, id="orpo-16gb-not-strict-warns"),
]


@pytest.mark.parametrize(("method", "free_gb", "allow_gc", "strict", "expected"), DECISIONS)
def test_decision_table(method: str, free_gb: float, allow_gc: bool, strict: bool, expected: object) -> None:
    run = lambda: check_hardware(  # noqa: E731
        method, allow_gradient_checkpointing=allow_gc, strict=strict, mem_get_info=gpu(free_gb, 80)
    )
    if expected == "error":
        with pytest.raises(HardwareIncompatibleError) as info:
            run()
        message = str(info.value)
        assert message.startswith(ORPO_REFUSAL)
        assert f"{free_gb:.1f} GB free of 80.0 GB" in message
        return
    report = run()
    assert report.device == "cuda"
    assert report.gradient_checkpointing is expected
    assert report.free_gb == pytest.approx(free_gb)
    assert report.total_gb == pytest.approx(80.0)
    if not strict:
        assert len(report.warnings) == 1 and report.warnings[0].startswith(ORPO_REFUSAL)
    elif expected is True:
        assert any("gradient checkpointing" in w for w in report.warnings)
    else:
        assert report.warnings == []


def test_refusal_is_a_runtime_error_and_foundry_error() -> None:
    with pytest.raises(RuntimeError):
        check_hardware("orpo", mem_get_info=gpu(8, 16))


def test_cpu_requested_reports_cpu_without_reading_vram() -> None:
    def never() -> tuple[int, int]:
        raise AssertionError("mem_get_info must not be read for device='cpu'")

    report = check_hardware("orpo", device="cpu", mem_get_info=never)
    assert report.device == "cpu"
    assert report.gradient_checkpointing is False
    assert any("CPU" in w for w in report.warnings)


def test_auto_without_cuda_is_cpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    report = check_hardware("orpo")
    assert report.device == "cpu"
    assert report.gradient_checkpointing is False


def test_cuda_requested_without_cuda_is_refused() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a CUDA device")
    with pytest.raises(HardwareIncompatibleError, match="no CUDA device"):
        check_hardware("dora", device="cuda")


def test_unknown_method_lists_registered() -> None:
    with pytest.raises(UnknownStrategyError) as info:
        check_hardware("sgd", mem_get_info=gpu(80))
    assert all(name in str(info.value) for name in registered_names())


def test_metadata_is_plain() -> None:
    report = HardwareReport("cuda", "H100", 80.0, 70.0, True, ["w"])
    assert report.to_metadata() == {
        "device": "cuda",
        "device_name": "H100",
        "memory_total_gb": 80.0,
        "memory_free_gb": 70.0,
        "gradient_checkpointing": True,
        "hardware_warnings": ["w"],
    }


@pytest.mark.gpu
@pytest.mark.parametrize("method", registered_names())
def test_real_device(method: str) -> None:
    """Against the real CUDA device: a reading, and a decision consistent with the strategy's floor."""
    import torch

    from foundry_assets.crucible.strategies import get_strategy

    free, total = torch.cuda.mem_get_info()
    floor = get_strategy(method).min_vram_gb
    report = check_hardware(method, device="cuda", allow_gradient_checkpointing=True)
    assert report.device == "cuda"
    assert report.device_name == torch.cuda.get_device_name()
    assert report.total_gb == pytest.approx(total / BYTES_PER_GB, rel=1e-3)
    assert report.free_gb is not None and report.total_gb is not None
    assert 0 < report.free_gb <= report.total_gb
    assert report.gradient_checkpointing is (free / BYTES_PER_GB < floor)
