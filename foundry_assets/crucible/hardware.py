"""Hardware pre-flight: decide, before any model loads, whether this node can run a training method.

The decision (`decide`) is a pure function of the strategy's VRAM floor, the job's estimated peak memory
(`vram.py`) and the free/total device memory; the measurement (`torch.cuda.mem_get_info`) is injectable, so the table
is unit-tested on a CPU-only machine, and `foundry preflight --vram-gb N` asks the same question of an imagined card.
Memory is reported in decimal gigabytes (1 GB = 10**9 bytes), the unit GPU vendors print on the box.
"""

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.crucible.vram import JobShape, VramEstimate, job_shape
from foundry_assets.errors import HardwareIncompatibleError

if TYPE_CHECKING:
    from foundry_assets.manifest import TrainingManifest

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
    estimate: VramEstimate | None = None
    """The estimate the decision used (the one for the chosen checkpointing), where the job's shape was given."""

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster materialization metadata (str, float, bool, list, None)."""
        return {
            "device": self.device,
            "device_name": self.device_name,
            "memory_total_gb": self.total_gb,
            "memory_free_gb": self.free_gb,
            "gradient_checkpointing": self.gradient_checkpointing,
            "hardware_warnings": list(self.warnings),
            **(self.estimate.to_metadata() if self.estimate else {}),
        }


@dataclass(frozen=True)
class Decision:
    """Whether a job fits `free_gb`: with or without gradient checkpointing, or not at all (`refusal`)."""

    fits: bool
    gradient_checkpointing: bool
    estimate: VramEstimate | None
    refusal: str | None = None
    warning: str | None = None


def insufficient_vram_message(
    method: str,
    *,
    free_gb: float,
    total_gb: float,
    min_gb: float,
    estimate: VramEstimate | None = None,
    with_checkpointing: VramEstimate | None = None,
) -> str:
    """The refusal text; its first sentence is fixed so operators and tests can match on it."""
    need = max(min_gb, estimate.required_gb if estimate else 0.0)
    parts = [
        f"Insufficient VRAM for {method.upper()}. Use Gradient Checkpointing or upgrade node.",
        f"Measured {free_gb:.1f} GB free of {total_gb:.1f} GB; {method} needs at least {need:.1f} GB free",
    ]
    if estimate is not None:
        parts[-1] += f" ({estimate.describe()}; {method}'s floor is {min_gb:.1f} GB)"
    parts[-1] += "."
    remedies = ["set method.allow_gradient_checkpointing: true"]
    if with_checkpointing is not None:
        remedies[0] += f" (estimated {with_checkpointing.required_gb:.1f} GB needed with it)"
    remedies += [
        "lower compute.batch_size (method_config.token_budget with token-budget batching) or method.max_seq_length",
        "use a node with more free memory",
    ]
    parts.append("Remedies: " + "; ".join(remedies) + ".")
    return " ".join(parts)


def decide(
    method: str,
    *,
    free_gb: float,
    total_gb: float,
    allow_gradient_checkpointing: bool,
    strict: bool = True,
    job: JobShape | None = None,
) -> Decision:
    """The pre-flight's decision table, with no device in sight.

    A job fits without gradient checkpointing when free memory covers both the strategy's floor and the estimate;
    otherwise, where checkpointing is allowed, it runs with checkpointing if the estimate with it fits (the floor
    is waived: that is the product's ORPO rule). Anything else is refused, or a warning where `strict` is false.
    """
    floor = get_strategy(method).min_vram_gb
    plain = job.estimate(gradient_checkpointing=False) if job else None
    if free_gb >= floor and (plain is None or free_gb >= plain.required_gb):
        return Decision(True, False, plain)
    checkpointed = job.estimate(gradient_checkpointing=True) if job else None
    if allow_gradient_checkpointing:
        if checkpointed is None or free_gb >= checkpointed.required_gb:
            warning = (
                f"{free_gb:.1f} GB free is under what {method} needs without it "
                f"({max(floor, plain.required_gb if plain else 0.0):.1f} GB): training with gradient checkpointing "
                "(slower, less memory)."
            )
            return Decision(True, True, checkpointed, warning=warning)
        refusal = (
            f"Insufficient VRAM for {method.upper()} even with gradient checkpointing. Measured {free_gb:.1f} GB "
            f"free of {total_gb:.1f} GB; {checkpointed.describe()}. Remedies: lower compute.batch_size (method_config."
            "token_budget with token-budget batching) or method.max_seq_length, use qlora (4-bit base), or a node with more free memory."
        )
    else:
        refusal = insufficient_vram_message(
            method,
            free_gb=free_gb,
            total_gb=total_gb,
            min_gb=floor,
            estimate=plain,
            with_checkpointing=checkpointed,
        )
    if strict:
        return Decision(False, False, plain, refusal=refusal)
    return Decision(
        True, False, plain, warning=f"{refusal} Continuing because strict_hardware_check is false."
    )


def check_hardware(
    method: str,
    *,
    allow_gradient_checkpointing: bool = False,
    strict: bool = True,
    device: DeviceChoice = "auto",
    mem_get_info: MemGetInfo | None = None,
    job: JobShape | None = None,
) -> HardwareReport:
    """Refuse (or warn about) a node that cannot run `method`; never loads a model.

    `mem_get_info` stands in for `torch.cuda.mem_get_info` and, when given, for the presence of a CUDA device.
    `job` adds the VRAM estimate to the strategy's floor. Gradient checkpointing is switched on only where it is
    needed (free memory under the floor or the estimate) and allowed.
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
    decision = decide(
        strategy.name(),
        free_gb=free_gb,
        total_gb=total_gb,
        allow_gradient_checkpointing=allow_gradient_checkpointing,
        strict=strict,
        job=job,
    )
    if decision.refusal is not None and not decision.fits:
        raise HardwareIncompatibleError(decision.refusal)
    warnings = [decision.warning] if decision.warning else []
    for line in warnings:
        logger.warning(line)
    return HardwareReport(
        device="cuda",
        device_name=_cuda_device_name(injected=mem_get_info is not None),
        total_gb=round(total_gb, 3),
        free_gb=round(free_gb, 3),
        gradient_checkpointing=decision.gradient_checkpointing,
        warnings=warnings,
        estimate=decision.estimate,
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


@dataclass(frozen=True)
class PreflightAnswer:
    """`foundry preflight`'s answer: fits or not, the one-paragraph summary, and the refusal where it does not."""

    fits: bool
    summary: str
    reason: str
    decision: Decision | None


def manifest_job_shape(manifest: "TrainingManifest") -> JobShape:
    """The job's memory-relevant shape, sized from model_path's config.json or the shipped architecture facts."""
    method = manifest.method_config
    return job_shape(
        base_model=manifest.base_model,
        model_path=manifest.model_path,
        method=method.type,
        rank=method.rank,
        batch_size=manifest.compute.batch_size,
        seq_len=method.max_seq_length,
        token_budget=method.token_budget if method.batching != "examples" else None,
    )


def preflight(manifest: "TrainingManifest", *, vram_gb: float | None = None) -> PreflightAnswer:
    """Answer "would this job fit on a card with `vram_gb` GB free?" without a GPU (this node's GPU if None)."""
    method = manifest.method_config
    job = manifest_job_shape(manifest)
    plain = job.estimate(gradient_checkpointing=False)
    head = f"{manifest.job_id}: {method.type} on {manifest.base_model} ({job.source}); {plain.describe()}."
    if vram_gb is None:
        if not _cuda_available():
            return PreflightAnswer(True, f"{head} No GPU here: pass --vram-gb N to check a card.", "", None)
        free_b, total_b = _torch_mem_get_info()
        free_gb, total_gb = free_b / BYTES_PER_GB, total_b / BYTES_PER_GB
    else:
        free_gb = total_gb = float(vram_gb)
    decision = decide(
        method.type,
        free_gb=free_gb,
        total_gb=total_gb,
        allow_gradient_checkpointing=method.allow_gradient_checkpointing,
        strict=method.strict_hardware_check,
        job=job,
    )
    if decision.refusal and not decision.fits:
        return PreflightAnswer(False, head, decision.refusal, decision)
    how = " with gradient checkpointing" if decision.gradient_checkpointing else ""
    verdict = f"FITS on {free_gb:.1f} GB{how}." + (f" {decision.warning}" if decision.warning else "")
    return PreflightAnswer(True, f"{head} {verdict}", "", decision)
