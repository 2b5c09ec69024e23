"""The training loop, top to bottom like litgpt's finetune/lora.py: load → adapters → trainer → train → save.

With `PreparedCheckpoints` (`checkpoints.prepare`, which decides where the run starts) the trainer saves resumable
checkpoints into the job's folder and resumes from the decided one; the run measures its tokens/s and peak memory
(`telemetry.py`).

Unsloth is the backend wherever it imports (on a CPU-only host it runs its own CPU backend: stock transformers +
PEFT + TRL with CPU defaults); where it cannot be imported the PEFT backend runs instead, with a logged warning that
is recorded in the result (`preconditions.resolve_backend`, which imports Unsloth before anything imports
transformers). Any other failure is raised, never papered over.
"""

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.chat_template import ensure_chat_template
from foundry_assets.crucible import checkpoints as ckpt
from foundry_assets.crucible.backend import (
    Backend,
    count_quantized_layers,
    ensure_unsloth_first,
    load_with_adapters,
)
from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.preconditions import (
    check_device,
    check_examples,
    check_prequantized,
    resolve_backend,
)
from foundry_assets.crucible.result import TrainResult
from foundry_assets.crucible.strategies import TrainingStrategy, get_strategy
from foundry_assets.crucible.telemetry import peak_memory_gib, plot_losses, reset_peak_memory
from foundry_assets.crucible.trainer import LogFn, TrainerRun, build_trainer
from foundry_assets.errors import TrainingError
from foundry_assets.fsio import replace_dir, write_text
from foundry_assets.hashing import sha256_tree

__all__ = ["ensure_unsloth_first", "loss_plot_path", "train_adapter"]

logger = logging.getLogger(__name__)

# What an adapter folder may hold: the adapter, its config and the tokenizer files. Everything else (trainer
# checkpoints, optimizer/scheduler state, pickled training args, PEFT's unfilled README.md template with the node's
# paths: the published tag has one model card, the publisher's) is removed before the folder is published.
_KEEP_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")


@dataclass
class _Setup:
    """One call's decisions before any model loads, and its start-up timings as they are taken."""

    name: str
    strategy: TrainingStrategy
    backend: Backend
    hardware: HardwareReport
    out_dir: Path
    called: float
    resume: ckpt.ResumePoint | None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Trained:
    trainable_params: int
    changed_params: int
    started: float
    runtime_s: float


def train_adapter(
    *,
    model_path: str | Path,
    strategy_name: str,
    train_examples: list[dict[str, Any]],
    out_dir: Path,
    params: TrainParams,
    hardware: HardwareReport,
    on_log: LogFn | None = None,
    backend: Literal["auto", "unsloth", "peft"] = "auto",
    checkpoints: ckpt.PreparedCheckpoints | None = None,
    base_model: str | None = None,
) -> TrainResult:
    """Train one adapter with `strategy_name` and publish it atomically to `out_dir` (safetensors, no pickle).

    `base_model` (the manifest's hub name) is what the adapter's config names as its base, so the published adapter
    loads off this node (`AutoPeftModelForCausalLM`); None leaves PEFT's value, `model_path`. With `checkpoints`,
    resume from the checkpoint `checkpoints.prepare` chose (if any), save one every `checkpoints.plan.every_steps`,
    and remove them once the adapter is out.
    """
    setup = _set_up(model_path, strategy_name, train_examples, out_dir, hardware, backend, checkpoints)
    reset_peak_memory()

    # 1. load the base model and add the adapters; the tokenizer keeps the base's chat template or gets the default
    model, tokenizer = _load(setup, model_path, params)
    template_source = ensure_chat_template(tokenizer)

    # 2. build the strategy's trainer
    setup.out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{setup.out_dir.name}.", dir=setup.out_dir.parent) as work:
        run = build_trainer(
            model=model,
            tokenizer=tokenizer,
            strategy=setup.strategy,
            examples=train_examples,
            params=params,
            hardware=hardware,
            backend=setup.backend,
            output_dir=checkpoints.plan.folder if checkpoints else Path(work) / "trainer",
            save_steps=checkpoints.plan.every_steps if checkpoints else 0,
            on_log=on_log,
            label=strategy_name,
            template_source=template_source,
        )

        # 3. train (from the last checkpoint of this lot, if any), with a snapshot to prove the parameters moved
        trained = _train(setup, run.trainer, params.max_steps)

        # 4. save into a staging folder (the tokenizer with the template it trained with), sweep anything that is not
        # adapter/tokenizer, then rename into place
        _save(run.trainer.model, tokenizer, Path(work) / "adapter", setup.out_dir, base_model)
    if checkpoints is not None:
        ckpt.clear(checkpoints.plan)
    return _result(setup, run, trained, params)


def _set_up(
    model_path: str | Path,
    strategy_name: str,
    train_examples: list[dict[str, Any]],
    out_dir: Path,
    hardware: HardwareReport,
    backend: str,
    checkpoints: ckpt.PreparedCheckpoints | None,
) -> _Setup:
    """Refuse what cannot train before anything loads, then choose the backend (importing Unsloth first)."""
    called = time.perf_counter()
    strategy = get_strategy(strategy_name)
    check_examples(strategy, train_examples)
    check_device(hardware)
    check_prequantized(model_path, strategy)
    warnings: list[str] = []
    chosen = resolve_backend(backend, warnings)
    timings = {"import_s": time.perf_counter() - called}
    resume = checkpoints.resume if checkpoints is not None else None
    warnings += [checkpoints.discarded] if checkpoints is not None and checkpoints.discarded else []
    return _Setup(strategy_name, strategy, chosen, hardware, Path(out_dir), called, resume, warnings, timings)


def _load(setup: _Setup, model_path: str | Path, params: TrainParams) -> tuple[Any, Any]:
    """The base model with the strategy's adapters, and its tokenizer; a 4-bit strategy must get 4-bit layers."""
    model, tokenizer = load_with_adapters(
        setup.backend,
        model_path=str(model_path),
        strategy=setup.strategy,
        params=params,
        hardware=setup.hardware,
    )
    if setup.strategy.load_in_4bit and count_quantized_layers(model) == 0:
        raise TrainingError(
            f"{setup.name} asks for a 4-bit base but the loaded model has no bitsandbytes Linear4bit layers "
            f"(backend {setup.backend}, device {setup.hardware.device}); refusing to train a 16-bit model under a "
            "4-bit name."
        )
    setup.timings["load_s"] = time.perf_counter() - setup.called - setup.timings["import_s"]
    return model, tokenizer


def _train(setup: _Setup, trainer: Any, max_steps: int) -> _Trained:
    """Run the trainer from `setup.resume` (or step 0) and count the trainable tensors that moved (none is an error)."""
    resume = setup.resume
    before = _snapshot(trainer.model)
    started = time.perf_counter()
    setup.timings["trainer_s"] = started - setup.called - setup.timings["import_s"] - setup.timings["load_s"]
    trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
    runtime_s = time.perf_counter() - started
    if resume is not None:
        logger.info("%s resumed from step %d (%s)", setup.name, resume.step, resume.path)
    changed = _count_changed(trainer.model, before)
    if changed == 0:
        raise TrainingError(f"{setup.name}: no trainable parameter changed in {max_steps} steps.")
    return _Trained(sum(int(t.numel()) for t in before.values()), changed, started, runtime_s)


def _save(model: Any, tokenizer: Any, staging: Path, out_dir: Path, base_model: str | None) -> None:
    """Adapter and tokenizer into `staging`, swept to safetensors/config/tokenizer files, then renamed to `out_dir`."""
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    _sort_target_modules(staging / "adapter_config.json")
    _name_base_model(staging / "adapter_config.json", base_model)
    _sweep(staging)
    _check_adapter_files(staging)
    replace_dir(staging, out_dir)


def _sort_target_modules(config_path: Path) -> None:
    """PEFT keeps `target_modules` as a set and writes it in set order, which follows PYTHONHASHSEED: the same adapter
    saved by two processes differed in this file, so a re-publish was refused as different content. Sorted, it is
    the same bytes every time."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        write_text(config_path, json.dumps(config, indent=2, sort_keys=True))  # as PEFT writes it


def _name_base_model(config_path: Path, base_model: str | None) -> None:
    """PEFT writes the path the base was loaded from as `base_model_name_or_path`, so the published adapter loaded
    only on the training node: it names `base_model` (the manifest's hub name) instead. Written before the adapter's
    hashes are taken, so `adapter_saved` covers it."""
    if not base_model:
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    write_text(config_path, json.dumps(config, indent=2, sort_keys=True))  # as PEFT writes it


def _result(setup: _Setup, run: TrainerRun, trained: _Trained, params: TrainParams) -> TrainResult:
    hardware, meter, out_dir = setup.hardware, run.meter, setup.out_dir
    title = f"{setup.name} ({setup.backend}, {hardware.device})"
    plot = _plot(run.losses, out_dir, title, setup.warnings)
    return TrainResult(
        backend=setup.backend,
        device=hardware.device,
        steps=int(run.trainer.state.global_step),
        losses=run.losses,
        adapter_dir=out_dir,
        files=sha256_tree(out_dir),
        trainable_params=trained.trainable_params,
        changed_params=trained.changed_params,
        runtime_s=trained.runtime_s,
        gradient_checkpointing=hardware.gradient_checkpointing,
        warnings=[*hardware.warnings, *setup.warnings],
        device_name=hardware.device_name,
        resumed_from_step=setup.resume.step if setup.resume else 0,
        steps_run=meter.steps_run,
        tokens=meter.tokens,
        tokens_per_s=meter.tokens_per_s(),
        steady_tokens_per_s=meter.steady_tokens_per_s(),
        peak_memory_gib=peak_memory_gib(),
        loss_plot=plot,
        time_to_first_step_s=meter.first_step_at - setup.called if meter.first_step_at else None,
        first_step_at=meter.first_step_at,
        timings={k: round(v, 2) for k, v in setup.timings.items()},
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        chat_template=run.template.to_metadata(),
        batching=run.batching_metadata(params),
        padding_share=meter.padding_share,
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
