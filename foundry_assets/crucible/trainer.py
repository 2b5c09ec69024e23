"""The strategy's trainer, set up for one run: settings from the run's parameters, hardware and backend, a loss
callback that records and forwards every logged loss, and the speed meter (`telemetry.py`).

Called after the model is loaded, so Unsloth (where it is the backend) is imported before anything here imports
transformers or datasets.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.chat_template import TemplateSource
from foundry_assets.console import verbose
from foundry_assets.crucible.backend import Backend
from foundry_assets.crucible.batching import PackingCollator
from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.kernels import PER_SEGMENT, describe_kernels
from foundry_assets.crucible.labels import TemplateCheck, check_trained_labels
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.preconditions import cap_example_text
from foundry_assets.crucible.strategies import TrainerSettings, TrainingStrategy
from foundry_assets.crucible.telemetry import SpeedMeter

logger = logging.getLogger(__name__)

LogFn = Callable[[int, float], None]


@dataclass
class TrainerRun:
    """The trainer, the losses its callback records (step, loss), the meter that counts its tokens, the check of
    its tokenized rows' labels (`labels.check_trained_labels`) and how its batches are formed and run."""

    trainer: Any
    losses: list[tuple[int, float]]
    meter: SpeedMeter
    template: TemplateCheck
    kernels: dict[str, str]

    def batching_metadata(self, params: TrainParams) -> dict[str, Any]:
        """The batching and kernel choice, and what the planned micro-batches were (token-budget batching)."""
        summary: dict[str, Any] = {
            "mode": params.batching,
            "token_budget": params.token_budget,
            **self.kernels,
        }
        if params.batching == "examples":
            summary["batch_size"] = params.batch_size
        plan = getattr(self.trainer, "batch_plan", None)
        if plan is not None:
            summary |= {
                "micro_batches_per_epoch": len(plan.batches),
                "largest_micro_batch_tokens": max(plan.slots, default=0),
                "examples_per_micro_batch_mean": round(
                    sum(map(len, plan.batches)) / max(len(plan.batches), 1), 2
                ),
                "planned_padding_share": round(plan.padding_share, 4),
            }
        # ORPO's loss per micro-batch weighted by its share of the step (batching.step_weighted_orpo_trainer)
        weighted = getattr(self.trainer, "weighted_micro_batches", None)
        if weighted is not None:
            summary["orpo_step_weighted_micro_batches"] = weighted
        summary["grad_accum"] = params.grad_accum
        return summary


def build_trainer(
    *,
    model: Any,
    tokenizer: Any,
    strategy: TrainingStrategy,
    examples: list[dict[str, Any]],
    params: TrainParams,
    hardware: HardwareReport,
    backend: Backend,
    output_dir: Path,
    save_steps: int,
    on_log: LogFn | None,
    label: str,
    template_source: TemplateSource,
) -> TrainerRun:
    """The strategy's trainer on `examples`, writing checkpoints (if `save_steps`) into `output_dir`, once its
    tokenized rows are checked to train the assistant answers and their end-of-turn token only."""
    from datasets import Dataset

    settings = trainer_settings(params, strategy, hardware, backend, output_dir, save_steps)
    dataset = Dataset.from_list(cap_example_text(examples, params.max_seq_length))
    trainer = strategy.build_trainer(
        model=model, tokenizer=tokenizer, train_dataset=dataset, settings=settings
    )
    if params.batching == "packed":
        # the stack's own collator builds the labels and masks; its padded rows are then packed into one
        unsloth_gpu = backend == "unsloth" and hardware.device == "cuda"
        trainer.data_collator = PackingCollator(trainer.data_collator, sequence_lengths=unsloth_gpu)
    template = check_trained_labels(
        trainer.train_dataset, tokenizer, source=template_source, max_length=params.max_seq_length
    )
    if not verbose():  # the Trainer's printed log dicts repeat what the loss callback records
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    losses: list[tuple[int, float]] = []
    trainer.add_callback(loss_callback(losses, on_log, label))
    meter = SpeedMeter(grad_accum=params.grad_accum, warmup_steps=3 if params.max_steps >= 8 else 1)
    trainer.add_callback(meter.callback())
    trainer.data_collator = meter.wrap_collator(trainer.data_collator)
    # rows of several examples: packed here, or padding-free where the stack chose it (Unsloth's SFTConfig)
    flat = params.batching == "packed" or bool(getattr(trainer.args, "padding_free", False))
    kernels = describe_kernels(flat=flat, backend=backend, device=hardware.device, model=trainer.model)
    if params.batching == "packed" and PER_SEGMENT in kernels["attention"]:
        logger.warning(
            "%s: batching packed runs here as %s, with eager decoder layers; on an H200 with this stack "
            "length_grouped trained 2.0-3.3x faster at the same token_budget (benchmarks/RESULTS.md, "
            "'Training on real lengths')",
            label,
            kernels["attention"],
        )
    return TrainerRun(trainer, losses, meter, template, kernels)


def trainer_settings(
    params: TrainParams,
    strategy: TrainingStrategy,
    hardware: HardwareReport,
    backend: Backend,
    output_dir: Path,
    save_steps: int,
) -> TrainerSettings:
    """What the strategy's trainer is told: the run's parameters, set for this device and backend."""
    return TrainerSettings(
        output_dir=str(output_dir),
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
        gradient_checkpointing=hardware.gradient_checkpointing and backend == "peft",
        orpo_beta=params.orpo_beta,
        save_steps=save_steps,
        optim=params.optim if hardware.device == "cuda" else "adamw_torch",
        max_grad_norm=params.max_grad_norm,
        # the model's fused loss is Unsloth's; on the PEFT backend TRL's chunked loss is what avoids full logits
        model_loss=backend == "unsloth" and not params.token_metrics,
        padding_free=padding_free(params, strategy, backend),
        batching=params.batching,
        token_budget=params.token_budget,
    )


def padding_free(params: TrainParams, strategy: TrainingStrategy, backend: Backend) -> bool | None:
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
    if params.batching != "examples":  # token-budget batches: the crucible lays them out (`batching.py`)
        return False if strategy.data_format == "sft" else None
    if backend == "unsloth" and strategy.use_dora and strategy.data_format == "sft":
        return False
    return None


def _use_bf16(hardware: HardwareReport) -> bool:
    if hardware.device != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_bf16_supported())


def loss_callback(losses: list[tuple[int, float]], on_log: LogFn | None, label: str) -> Any:
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
