"""Hardware pre-flight: decide, before any model loads, whether this node can run a training method.

The decision is a pure function of the strategy's VRAM floor and the measured free/total device memory; the
measurement (`torch.cuda.mem_get_info`) is injectable so the table is unit-tested on a CPU-only machine.
Memory is reported in decimal gigabytes (1 GB = 10**9 bytes), the unit GPU vendors print on the box.
"""

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.errors import HardwareIncompatibleError

logger = logging.getLogger(__name__)

BYTES_PER_GB = 10**9
DeviceChoice = Literal["auto", "cuda", "cpu"]
MemGetInfo = Callable[[], tuple[int, int]]


@dataclass(frozen=True)
class HardwareReport:
    """What the pre-flight measured and decided; `gradient_checkpointing` is what training must use."""

    device: Literal["cuda", "cpu"]
    device_name: str
    total_gb: float | None
    free_gb: float | None
    gradient_checkpointing: bool
    warnings: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster materialization metadata (str, float, bool, list, None)."""
        return {
            "device": self.device,
            "device_name": self.device_name,
            "memory_total_gb": self.total_gb,
            "memory_free_gb": self.free_gb,
            "gradient_checkpointing": self.gradient_checkpointing,
            "hardware_warnings": list(self.warnings),
        }


def insufficient_vram_message(method: str, *, free_gb: float, total_gb: float, min_gb: float) -> str:
    """The refusal text; its first sentence is fixed so operators and tests can match on it."""
    return (
        f"Insufficient VRAM for {method.upper()}. Use Gradient Checkpointing or upgrade node. "
        f"Measured {free_gb:.1f} GB free of {total_gb:.1f} GB; {method} needs at least {min_gb:.1f} GB free "
        f"(set method.allow_gradient_checkpointing: true to run in less)."
    )


def check_hardware(
    method: str,
    *,
    allow_gradient_checkpointing: bool = False,
    strict: bool = True,
    device: DeviceChoice = "auto",
    mem_get_info: MemGetInfo | None = None,
) -> HardwareReport:
    """Refuse (or warn about) a node that cannot run `method`; never loads a model.

    `mem_get_info` stands in for `torch.cuda.mem_get_info` and, when given, for the presence of a CUDA device.
    Gradient checkpointing is switched on only where it is needed (free memory under the floor) and allowed.
    """
    strategy = get_strategy(method)
    if device not in ("auto", "cuda", "cpu"):
        raise HardwareIncompatibleError(f"Unknown device {device!r}; choose auto, cuda or cpu.")
    if device == "cpu":
        return _cpu_report(method, requested=True)
    cuda = mem_get_info is not None or _cuda_available()
    if not cuda:
        if device == "cuda":
            raise HardwareIncompatibleError(
                "device='cuda' was requested but torch sees no CUDA device "
                f"(torch.cuda.is_available() is false, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                "run on a GPU node or use device='auto'/'cpu'."
            )
        return _cpu_report(method, requested=False)

    free_b, total_b = (mem_get_info or _torch_mem_get_info)()
    free_gb, total_gb = free_b / BYTES_PER_GB, total_b / BYTES_PER_GB
    floor = strategy.min_vram_gb
    warnings: list[str] = []
    gradient_checkpointing = False
    if free_gb < floor:
        message = insufficient_vram_message(method, free_gb=free_gb, total_gb=total_gb, min_gb=floor)
        if allow_gradient_checkpointing:
            gradient_checkpointing = True
            warnings.append(
                f"{free_gb:.1f} GB free is under {method}'s {floor:.1f} GB floor: training with gradient "
                "checkpointing (slower, less memory)."
            )
        elif strict:
            raise HardwareIncompatibleError(message)
        else:
            warnings.append(f"{message} Continuing because strict_hardware_check is false.")
    for line in warnings:
        logger.warning(line)
    return HardwareReport(
        device="cuda",
        device_name=_cuda_device_name(injected=mem_get_info is not None),
        total_gb=round(total_gb, 3),
        free_gb=round(free_gb, 3),
        gradient_checkpointing=gradient_checkpointing,
        warnings=warnings,
    )


def _cpu_report(method: str, *, requested: bool) -> HardwareReport:
    why = "device='cpu' was requested" if requested else "no CUDA device found"
    warning = f"{why}: training {method} on the CPU (slow; fit for tiny models and CI, not production runs)."
    logger.warning(warning)
    total_gb, free_gb = _host_memory_gb()
    threads = _torch_threads()
    name = platform.processor() or platform.machine() or "cpu"
    return HardwareReport(
        device="cpu",
        device_name=f"{name} ({threads} threads)" if threads else name,
        total_gb=total_gb,
        free_gb=free_gb,
        gradient_checkpointing=False,
        warnings=[warning],
    )


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _torch_mem_get_info() -> tuple[int, int]:
    import torch

    free, total = torch.cuda.mem_get_info()
    return int(free), int(total)


def _cuda_device_name(*, injected: bool) -> str:
    if not _cuda_available():
        return "cuda (simulated memory reading)" if injected else "cuda"
    import torch

    return str(torch.cuda.get_device_name())


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return None
    return int(torch.get_num_threads())


def _host_memory_gb() -> tuple[float | None, float | None]:
    """Total and available host RAM (Linux/macOS sysconf); None where the platform does not say."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page / BYTES_PER_GB
        free = os.sysconf("SC_AVPHYS_PAGES") * page / BYTES_PER_GB
    except (AttributeError, ValueError, OSError):
        return None, None
    return round(total, 3), round(free, 3)
