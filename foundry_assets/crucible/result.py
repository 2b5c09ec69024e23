"""What one training run hands back (`TrainResult`): from the training process to its caller, pickled across spawn."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry_assets.crucible.backend import Backend


@dataclass
class TrainResult:
    """What a run produced and how: the adapter folder with the sha256 of each file, the loss curve, the backend."""

    backend: Backend
    device: str
    steps: int
    losses: list[tuple[int, float]]
    adapter_dir: Path
    files: dict[str, str]
    trainable_params: int
    changed_params: int
    runtime_s: float
    gradient_checkpointing: bool
    warnings: list[str] = field(default_factory=list)
    device_name: str = ""
    resumed_from_step: int = 0
    steps_run: int = 0
    tokens: int = 0
    tokens_per_s: float | None = None
    steady_tokens_per_s: float | None = None
    peak_memory_gib: float | None = None
    loss_plot: Path | None = None
    time_to_first_step_s: float | None = None
    """From the call (before Unsloth is imported, where it was not yet) to the end of the first optimizer step."""
    first_step_at: float | None = None
    """`time.perf_counter()` at the end of the first step, for callers that time from their own start."""
    timings: dict[str, float] = field(default_factory=dict)
    """Start-up by phase (s): importing Unsloth, loading the model with adapters, building the trainer."""
    visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as the training process saw it (the run's claimed GPU)."""
    chat_template: dict[str, Any] = field(default_factory=dict)
    """The chat template trained with (source "base" or "default"), its end-of-turn token and the rows checked."""
    batching: dict[str, Any] = field(default_factory=dict)
    """How micro-batches were formed (`method_config.batching`, token_budget, the plan) and the attention kernel and
    decoder-layer path they ran on (`kernels.describe_kernels`)."""
    padding_share: float | None = None
    """Share of the trained batches' token positions that were padding."""

    def to_metadata(self) -> dict[str, Any]:
        """Plain values for Dagster materialization metadata (str, int, float, bool, list, dict)."""
        return {
            "backend": self.backend,
            "device": self.device,
            "steps": self.steps,
            "final_loss": self.losses[-1][1] if self.losses else None,
            "losses": [[step, loss] for step, loss in self.losses],
            "adapter_dir": str(self.adapter_dir),
            "adapter_files": dict(self.files),
            "trainable_params": self.trainable_params,
            "changed_params": self.changed_params,
            "runtime_s": round(self.runtime_s, 3),
            "gradient_checkpointing": self.gradient_checkpointing,
            "training_warnings": list(self.warnings),
            "device_name": self.device_name,
            "resumed_from_step": self.resumed_from_step,
            "steps_run": self.steps_run,
            "tokens": self.tokens,
            "tokens_per_s": _round(self.tokens_per_s, 1),
            "steady_tokens_per_s": _round(self.steady_tokens_per_s, 1),
            "peak_memory_gib": _round(self.peak_memory_gib, 3),
            "loss_plot": str(self.loss_plot) if self.loss_plot else None,
            "time_to_first_step_s": _round(self.time_to_first_step_s, 2),
            "startup_timings_s": dict(self.timings),
            "chat_template": dict(self.chat_template),
            "batching": dict(self.batching),
            "padding_share": _round(self.padding_share, 4),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
