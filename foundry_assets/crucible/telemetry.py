"""What a training run measures about itself: tokens, step times, peak memory, and the loss curve as a PNG.

Tokens are counted on the host as the collator builds each batch (no device sync); step times are read at the end
of the first step, of the warm-up and of training, each after one `torch.cuda.synchronize()`, so the steady-state
rate leaves out the warm-up, whose first step carries Unsloth's compile.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry_assets.fsio import atomic_file

logger = logging.getLogger(__name__)

GIB = 1024**3
_TOKEN_MASKS = ("attention_mask", "chosen_attention_mask", "rejected_attention_mask")


@dataclass
class SpeedMeter:
    """Counts tokens per collated batch and times the run; `grad_accum` batches make one optimizer step."""

    grad_accum: int = 1
    warmup_steps: int = 1
    batch_tokens: list[int] = field(default_factory=list)
    batch_slots: list[int] = field(default_factory=list)
    """Token positions each batch occupies on the device, padding included."""
    started: float = 0.0
    first_step_at: float | None = None
    warm_at: float | None = None
    ended: float | None = None
    first_step: int = 0
    last_step: int = 0

    def wrap_collator(self, collate: Any) -> Any:
        """A collator that records how many real (unpadded) tokens each batch carries, and how many positions."""

        def counting(features: Any) -> Any:
            batch = collate(features)
            self.batch_tokens.append(_count_tokens(batch))
            self.batch_slots.append(_count_slots(batch))
            return batch

        return counting

    def callback(self) -> Any:
        from transformers import TrainerCallback

        meter = self

        class _SpeedCallback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                meter.started = time.perf_counter()
                meter.first_step = meter.last_step = int(state.global_step)

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                meter.last_step = int(state.global_step)
                done = meter.last_step - meter.first_step
                if done == 1 or done == meter.warmup_steps:
                    _synchronize()
                    now = time.perf_counter()
                    meter.first_step_at = meter.first_step_at or now
                    meter.warm_at = now if done == meter.warmup_steps else meter.warm_at

            def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                _synchronize()
                meter.ended = time.perf_counter()

        return _SpeedCallback()

    @property
    def steps_run(self) -> int:
        return self.last_step - self.first_step

    @property
    def tokens(self) -> int:
        """Tokens of the batches the optimizer steps consumed (the loader may have collated one more)."""
        return sum(self.batch_tokens[: self.steps_run * self.grad_accum])

    @property
    def padding_share(self) -> float | None:
        """Share of the consumed batches' token positions that were padding."""
        slots = sum(self.batch_slots[: self.steps_run * self.grad_accum])
        return 1.0 - self.tokens / slots if slots else None

    def tokens_per_s(self) -> float | None:
        """Whole-run rate, first step (compile) included."""
        if self.ended is None or self.ended <= self.started or not self.tokens:
            return None
        return self.tokens / (self.ended - self.started)

    def steady_tokens_per_s(self) -> float | None:
        """Rate after the warm-up steps: what the kernels sustain once compiled."""
        if self.ended is None or self.warm_at is None or self.steps_run <= self.warmup_steps:
            return None
        tokens = sum(
            self.batch_tokens[self.warmup_steps * self.grad_accum : self.steps_run * self.grad_accum]
        )
        elapsed = self.ended - self.warm_at
        return tokens / elapsed if elapsed > 0 else None


def _count_tokens(batch: Any) -> int:
    masks = [batch[key] for key in _TOKEN_MASKS if key in batch]
    if masks:
        return int(sum(int(mask.sum()) for mask in masks))
    ids = batch.get("input_ids") if hasattr(batch, "get") else None
    return int(ids.numel()) if ids is not None else 0


def _count_slots(batch: Any) -> int:
    """Positions the model runs: input_ids' size, or for a preference batch chosen and rejected padded to one length."""
    if "chosen_input_ids" in batch and "rejected_input_ids" in batch:
        chosen, rejected = batch["chosen_input_ids"], batch["rejected_input_ids"]
        return int(2 * chosen.shape[0] * max(chosen.shape[-1], rejected.shape[-1]))
    ids = batch.get("input_ids") if hasattr(batch, "get") else None
    return int(ids.numel()) if ids is not None else 0


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """Peak memory allocated by tensors on the current CUDA device since the last reset; None on the CPU."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return torch.cuda.max_memory_allocated() / GIB


def device_memory_held_gib(
    device: str,
    *,
    read: Callable[[], tuple[int, int]] | None = None,
    settle_s: float = 10.0,
    poll_s: float = 0.5,
) -> float | None:
    """GPU memory in use on the current CUDA device by every process (total − free), in GiB; None off CUDA.

    Measured by the Dagster step after the training process has exited: what is left is this process's CUDA context
    and anything other processes hold, not the training's tensors or allocator cache. Two of five 8B jobs read 7.2 GiB
    right after the training process was joined (the others their own ~1 GiB), while a bare child's memory is back by
    the time it is joined (`benchmarks/gpu_memory_after_child.py`); so this reads until two readings `poll_s` apart
    agree, for at most `settle_s`, and what it still reads is reported. `read` stands in for `torch.cuda.mem_get_info`.
    """
    if read is None:
        if device != "cuda":
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        read = torch.cuda.mem_get_info
    deadline = time.monotonic() + settle_s
    free, total = read()
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        now_free, total = read()
        if now_free == free:
            break
        free = now_free
    return round((total - free) / GIB, 3)


def plot_losses(losses: list[tuple[int, float]], path: Path, *, title: str) -> Path:
    """Draw the loss curve (matplotlib, Agg) to `path` as a PNG and return it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    try:
        ax.plot([s for s, _ in losses], [loss for _, loss in losses], marker="o", markersize=3, linewidth=1.5)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_file(path) as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
    return path
