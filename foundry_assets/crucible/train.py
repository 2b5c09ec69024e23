"""The training loop, top to bottom like litgpt's finetune/lora.py: load → adapters → trainer → train → save.

With a `CheckpointPlan` the trainer saves resumable checkpoints into the job's folder, and a rerun of the same lot
resumes from the newest whole one (`checkpoints.py`); the run measures its tokens/s and peak memory (`telemetry.py`).

Unsloth is the backend wherever it imports (on a CPU-only host it runs its own CPU backend: stock transformers +
PEFT + TRL with CPU defaults); where it cannot be imported the PEFT backend runs instead, with a logged warning that
is recorded in the result. Any other failure is raised, never papered over.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.console import verbose
from foundry_assets.crucible import checkpoints as ckpt
from foundry_assets.crucible.backend import (
    Backend,
    count_quantized_layers,
    ensure_unsloth_first,
    load_with_adapters,
)
from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.strategies import TrainerSettings, TrainingStrategy, get_strategy
from foundry_assets.crucible.telemetry import SpeedMeter, peak_memory_gib, plot_losses, reset_peak_memory
from foundry_assets.errors import DataError, TrainingError
from foundry_assets.fsio import replace_dir
from foundry_assets.hashing import sha256_tree

__all__ = ["CheckpointPlan", "TrainParams", "TrainResult", "ensure_unsloth_first", "train_adapter"]
CheckpointPlan = ckpt.CheckpointPlan

logger = logging.getLogger(__name__)

LogFn = Callable[[int, float], None]
_REQUIRED_KEYS = {"sft": ("text",), "preference": ("prompt", "chosen", "rejected")}
# What an adapter folder may hold: the adapter, its config and the tokenizer files. Everything else (trainer
# checkpoints, optimizer/scheduler state, pickled training args) is removed before the folder is published.
_KEEP_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".md")


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
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def train_adapter(
    *,
    model_path: str | Path,
    strategy_name: str,
    train_examples: list[dict[str, str]],
    out_dir: Path,
    params: TrainParams,
    hardware: HardwareReport,
    on_log: LogFn | None = None,
    backend: Literal["auto", "unsloth", "peft"] = "auto",
    checkpoints: ckpt.CheckpointPlan | None = None,
) -> TrainResult:
    """Train one adapter with `strategy_name` and publish it atomically to `out_dir` (safetensors, no pickle).

    With `checkpoints`, resume from the newest checkpoint of the same lot number if one exists (another lot's
    checkpoints are discarded), save one every `checkpoints.every_steps`, and remove them once the adapter is out.
    """
    called = time.perf_counter()
    strategy = get_strategy(strategy_name)
    _check_examples(strategy, train_examples)
    _check_device(hardware)
    _check_prequantized(model_path, strategy)
    out_dir = Path(out_dir)
    warnings: list[str] = []
    chosen: Backend = _resolve_backend(backend, warnings)
    timings = {"import_s": time.perf_counter() - called}
    resume: ckpt.ResumePoint | None = None
    if checkpoints is not None:
        resume, dropped = ckpt.prepare(checkpoints)
        warnings += [dropped] if dropped else []
    reset_peak_memory()

    # 1. load the base model and add the adapters
    model, tokenizer = load_with_adapters(
        chosen, model_path=str(model_path), strategy=strategy, params=params, hardware=hardware
    )
    if strategy.load_in_4bit and count_quantized_layers(model) == 0:
        raise TrainingError(
            f"{strategy_name} asks for a 4-bit base but the loaded model has no bitsandbytes Linear4bit layers "
            f"(backend {chosen}, device {hardware.device}); refusing to train a 16-bit model under a 4-bit name."
        )

    timings["load_s"] = time.perf_counter() - called - timings["import_s"]

    # 2. build the strategy's trainer
    from datasets import Dataset

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as work:
        settings = TrainerSettings(
            output_dir=str(checkpoints.folder if checkpoints else Path(work) / "trainer"),
            max_steps=params.max_steps,
            batch_size=params.batch_size,
            grad_accum=params.grad_accum,
            learning_rate=params.learning_rate,
            max_seq_length=params.max_seq_length,
            logging_steps=params.logging_steps,
            seed=params.seed,
            use_cpu=hardware.device == "cpu",
            bf16=_use_bf16(hardware),
            # Unsloth sets checkpointing up on the model itself; the Trainer must not enable HF's on top of it.
            gradient_checkpointing=hardware.gradient_checkpointing and chosen == "peft",
            orpo_beta=params.orpo_beta,
            save_steps=checkpoints.every_steps if checkpoints else 0,
            optim=params.optim if hardware.device == "cuda" else "adamw_torch",
            max_grad_norm=params.max_grad_norm,
            # the model's fused loss is Unsloth's; on the PEFT backend TRL's chunked loss is what avoids full logits
            model_loss=chosen == "unsloth" and not params.token_metrics,
            padding_free=_padding_free(params, strategy, chosen),
        )
        trainer = strategy.build_trainer(
            model=model,
            tokenizer=tokenizer,
            train_dataset=Dataset.from_list(train_examples),
            settings=settings,
        )
        if not verbose():  # the Trainer's printed log dicts repeat what the loss callback records
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            trainer.remove_callback(PrinterCallback)
            trainer.remove_callback(ProgressCallback)
        losses: list[tuple[int, float]] = []
        trainer.add_callback(_loss_callback(losses, on_log, strategy_name))
        meter = SpeedMeter(grad_accum=params.grad_accum, warmup_steps=3 if params.max_steps >= 8 else 1)
        trainer.add_callback(meter.callback())
        trainer.data_collator = meter.wrap_collator(trainer.data_collator)

        # 3. train (from the last checkpoint of this lot, if any), with a snapshot to prove the parameters moved
        before = _snapshot(trainer.model)
        started = time.perf_counter()
        timings["trainer_s"] = started - called - timings["import_s"] - timings["load_s"]
        trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
        runtime_s = time.perf_counter() - started
        if resume is not None:
            logger.info("%s resumed from step %d (%s)", strategy_name, resume.step, resume.path)
        changed = _count_changed(trainer.model, before)
        if changed == 0:
            raise TrainingError(
                f"{strategy_name}: no trainable parameter changed in {params.max_steps} steps."
            )

        # 4. save into a staging folder, sweep anything that is not adapter/tokenizer, then rename into place
        staging = Path(work) / "adapter"
        trainer.model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _sweep(staging)
        _check_adapter_files(staging)
        replace_dir(staging, out_dir)
    if checkpoints is not None:
        ckpt.clear(checkpoints)
    plot = _plot(losses, out_dir, f"{strategy_name} ({chosen}, {hardware.device})", warnings)

    return TrainResult(
        backend=chosen,
        device=hardware.device,
        steps=int(trainer.state.global_step),
        losses=losses,
        adapter_dir=out_dir,
        files=sha256_tree(out_dir),
        trainable_params=sum(int(t.numel()) for t in before.values()),
        changed_params=changed,
        runtime_s=runtime_s,
        gradient_checkpointing=hardware.gradient_checkpointing,
        warnings=[*hardware.warnings, *warnings],
        device_name=hardware.device_name,
        resumed_from_step=resume.step if resume else 0,
        steps_run=meter.steps_run,
        tokens=meter.tokens,
        tokens_per_s=meter.tokens_per_s(),
        steady_tokens_per_s=meter.steady_tokens_per_s(),
        peak_memory_gib=peak_memory_gib(),
        loss_plot=plot,
        time_to_first_step_s=meter.first_step_at - called if meter.first_step_at else None,
        first_step_at=meter.first_step_at,
        timings={k: round(v, 2) for k, v in timings.items()},
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def loss_plot_path(adapter_dir: Path) -> Path:
    """The loss-curve PNG sits beside the adapter folder, so the published folder stays adapter + tokenizer."""
    return adapter_dir.with_name(f"{adapter_dir.name}_loss.png")


def _plot(losses: list[tuple[int, float]], adapter_dir: Path, title: str, warnings: list[str]) -> Path | None:
    if not losses:
        return None
    try:
        return plot_losses(losses, loss_plot_path(adapter_dir), title=title)
    except ImportError as error:  # matplotlib is a dependency of the package, but not of every GPU image
        message = f"No loss plot: matplotlib cannot be imported ({error})."
        logger.warning(message)
        warnings.append(message)
        return None


def _padding_free(params: TrainParams, strategy: TrainingStrategy, backend: Backend) -> bool | None:
    """Padded batches for DoRA on Unsloth, unless `params.padding_free` says otherwise; else no choice (None).

    Unsloth compiles each decoder layer into one Inductor region for training (`unsloth/models/_block_compile.py`),
    but a layer that receives `packed_seq_lengths`, i.e. any padding-free or packed batch, runs its stock eager
    forward instead (`_wrap.forward`: "Host-read packed lengths ... stay stock"). When `padding_free` is left unset,
    Unsloth's SFTTrainer picks padding-free on every GPU it has not measured, H100 included
    (`unsloth/utils/padding_choice.py`: "sm90 not measured"). LoRA hardly cares (its fused kernels are hand-written),
    but DoRA then runs PEFT's eager weight-norm path and trained at half the plain loop's speed on an H100
    (23.2k tok/s against 43.3k padded, same H100, Llama-3.2-1B shape; benchmarks/RESULTS.md § Training (GPU)).
    Padding costs pad tokens only where lengths differ within a batch; with the compiled layers 1.87x as fast,
    padding still wins for DoRA unless about half of a batch is padding.
    """
    if params.padding_free is not None:
        return params.padding_free
    if backend == "unsloth" and strategy.use_dora and strategy.data_format == "sft":
        return False
    return None


def _resolve_backend(backend: str, warnings: list[str]) -> Backend:
    if backend == "peft":
        return "peft"
    if backend not in ("auto", "unsloth"):
        raise TrainingError(f"Unknown training backend {backend!r}; choose auto, unsloth or peft.")
    if ensure_unsloth_first():
        return "unsloth"
    if backend == "unsloth":
        raise TrainingError("backend='unsloth' was requested but unsloth cannot be imported; install it.")
    message = "Unsloth cannot be imported: training with transformers + PEFT instead (slower on GPU)."
    logger.warning(message)
    warnings.append(message)
    return "peft"


def _check_examples(strategy: TrainingStrategy, examples: list[dict[str, str]]) -> None:
    """Refuse an empty set or records that lack the keys the strategy's trainer reads."""
    if not examples:
        raise DataError(f"No training examples for {strategy.name()}.")
    required = _REQUIRED_KEYS[strategy.data_format]
    for index, example in enumerate(examples):
        missing = [key for key in required if not isinstance(example.get(key), str)]
        if missing:
            raise DataError(
                f"Training example {index} for {strategy.name()} ({strategy.data_format} format) lacks string "
                f"field(s) {missing}; it has {sorted(example)}. Format the data for {strategy.data_format} first."
            )


def prequantized_bits(model_path: str | Path) -> int | None:
    """4 or 8 for a local folder saved already quantized by bitsandbytes (`quantization_config` in config.json)."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None  # a hub name: its config is read by the loader
    try:
        quantization = json.loads(config_file.read_text(encoding="utf-8")).get("quantization_config") or {}
    except (OSError, ValueError):
        return None
    if quantization.get("load_in_4bit") or quantization.get("_load_in_4bit"):
        return 4
    if quantization.get("load_in_8bit") or quantization.get("_load_in_8bit"):
        return 8
    return None


def _check_prequantized(model_path: str | Path, strategy: TrainingStrategy) -> None:
    """A base saved in 4-bit (e.g. unsloth/llama-3-8b-bnb-4bit) trains only with a 4-bit strategy."""
    bits = prequantized_bits(model_path)
    if bits is not None and not (bits == 4 and strategy.load_in_4bit):
        raise TrainingError(
            f"the base model {model_path} is saved pre-quantized to {bits}-bit by bitsandbytes, but method "
            f"{strategy.name()!r} trains a 16-bit base; use method qlora with this base, or point model_path at "
            "the 16-bit base"
        )


def _check_device(hardware: HardwareReport) -> None:
    if hardware.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainingError("The hardware report says cuda but torch sees no CUDA device here.")


def _use_bf16(hardware: HardwareReport) -> bool:
    if hardware.device != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def _loss_callback(losses: list[tuple[int, float]], on_log: LogFn | None, label: str) -> Any:
    """A TrainerCallback that records the training loss at each logging step and forwards it."""
    from transformers import TrainerCallback

    class _LossCallback(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not logs or "loss" not in logs:
                return
            step, loss = int(state.global_step), float(logs["loss"])
            losses.append((step, loss))
            logger.info("%s step %d loss %.4f", label, step, loss)
            if on_log is not None:
                on_log(step, loss)

    return _LossCallback()


def _snapshot(model: Any) -> dict[str, Any]:
    return {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}


def _count_changed(model: Any, before: dict[str, Any]) -> int:
    import torch

    after = dict(model.named_parameters())
    return sum(
        1 for name, old in before.items() if not torch.equal(after[name].detach().float().cpu(), old.cpu())
    )


def _sweep(folder: Path) -> None:
    """Delete everything but adapter, config and tokenizer files (checkpoints, optimizer state, pickles)."""
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            shutil.rmtree(path)
        elif not path.name.endswith(_KEEP_SUFFIXES):
            path.unlink()


def _check_adapter_files(folder: Path) -> None:
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if not (folder / name).is_file():
            raise TrainingError(
                f"Saving the adapter wrote no {name} (found {sorted(p.name for p in folder.iterdir())})."
            )
