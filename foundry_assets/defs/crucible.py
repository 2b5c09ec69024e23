"""Train: pre-flight hardware check, then the crucible trains the strategy's adapter."""

import base64
import time
from pathlib import Path

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.crucible.checkpoints import CheckpointPlan, prepare
from foundry_assets.crucible.hardware import check_hardware, manifest_job_shape
from foundry_assets.crucible.isolation import train_adapter_isolated
from foundry_assets.crucible.telemetry import device_memory_held_gib
from foundry_assets.crucible.train import TrainParams
from foundry_assets.defs.common import (
    OWNERS,
    STAGE_TAGS,
    failure,
    file_hashes,
    job_context,
    markdown_table,
    table,
)
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, GpuResource, WorkspaceResource
from foundry_assets.errors import FoundryError, HardwareIncompatibleError
from foundry_assets.fsio import read_jsonl
from foundry_assets.stages import CuratedDataset, TrainedAdapter


@dg.asset(
    partitions_def=job_partitions,
    group_name="crucible",
    kinds={"pytorch", "safetensors"},
    owners=OWNERS,
    tags=STAGE_TAGS,
    pool="gpu",
)
def trained_adapter(
    context: dg.AssetExecutionContext,
    curated_dataset: CuratedDataset,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    gpu: GpuResource,
) -> dg.Output[TrainedAdapter]:
    """The LoRA/DoRA adapter (safetensors) and tokenizer trained by the manifest's strategy."""
    job = job_context(context, workspace, audit_trail)
    manifest = job.manifest
    method = manifest.method_config
    model_path = manifest.model_path or manifest.base_model
    if not manifest.merge.include_own_adapter:
        # A merge-only job: its merged model is made of the source jobs' adapters, so nothing is trained here.
        head = job.audit(Event.TRAINING_SKIPPED, reason="merge.include_own_adapter is false")
        context.log.info(
            "merge-only job: no adapter is trained; merged_model combines the source jobs' adapters"
        )
        return dg.Output(
            TrainedAdapter(lot_number=curated_dataset.lot_number, model_path=str(model_path)),
            metadata={
                "lot_number": curated_dataset.lot_number,
                "skipped": "merge-only job",
                "audit_head": head,
            },
        )
    try:
        hardware = check_hardware(
            method.type,
            allow_gradient_checkpointing=method.allow_gradient_checkpointing,
            strict=method.strict_hardware_check,
            device=manifest.compute.device,
            job=manifest_job_shape(manifest),
        )
    except HardwareIncompatibleError as e:
        job.audit(Event.PREFLIGHT_FAILED, reason=str(e))
        raise dg.Failure(description=str(e), allow_retries=False) from e
    for warning in hardware.warnings:
        context.log.warning(warning)
    job.audit(Event.PREFLIGHT_PASSED, **hardware.to_metadata())

    started = time.monotonic()

    def on_log(step: int, loss: float) -> None:
        elapsed = time.monotonic() - started
        context.log.info(
            f"step {step}/{method.max_steps}: loss {loss:.4f} ({elapsed:.0f} s, {step / elapsed:.2f} steps/s)"
        )
        job.audit(Event.TRAINING_LOSS, step=step, loss=loss)

    params = TrainParams(
        rank=method.rank,
        alpha=method.alpha,
        dropout=method.dropout,
        learning_rate=method.learning_rate,
        max_steps=method.max_steps,
        max_seq_length=method.max_seq_length,
        logging_steps=method.logging_steps,
        seed=method.seed,
        batch_size=manifest.compute.batch_size,
        grad_accum=manifest.compute.grad_accum,
        orpo_beta=method.orpo_beta,
    )
    plan = None
    if method.checkpoint_steps:
        plan = CheckpointPlan(
            job.workspace.checkpoints_dir(job.job_id), method.checkpoint_steps, curated_dataset.lot_number
        )
        resume, dropped = prepare(plan)
        if dropped:
            context.log.warning(dropped)
        if resume is not None:
            job.audit(Event.TRAINING_RESUMED, from_step=resume.step, checkpoint=str(resume.path))
        else:
            job.audit(Event.TRAINING_STARTED, checkpoint_steps=plan.every_steps, discarded=dropped)
    else:
        job.audit(Event.TRAINING_STARTED, checkpoint_steps=0)
    try:  # in a child process: Unsloth's process-wide patches and the training's GPU memory end with it
        result = train_adapter_isolated(
            model_path=model_path,
            strategy_name=method.type,
            train_examples=read_jsonl(curated_dataset.train_path),
            out_dir=job.workspace.adapter_dir(job.job_id),
            params=params,
            hardware=hardware,
            on_log=on_log,
            checkpoints=plan,
        )
    except FoundryError as e:
        raise failure(e, "training") from e
    for warning in result.warnings:
        context.log.warning(warning)
    held = device_memory_held_gib(result.device)
    summary = result.to_metadata()
    head = job.audit(
        Event.ADAPTER_SAVED,
        adapter_dir=str(result.adapter_dir),
        files=result.files,
        **{k: v for k, v in summary.items() if k not in ("files", "adapter_dir", "losses")},
    )
    losses = markdown_table(["step", "loss"], [[step, f"{loss:.4f}"] for step, loss in result.losses])
    value = TrainedAdapter(
        lot_number=curated_dataset.lot_number,
        model_path=str(model_path),
        adapter_dir=Path(result.adapter_dir),
        files=result.files,
        backend=result.backend,
        device=result.device,
    )
    return dg.Output(
        value,
        metadata={
            "lot_number": curated_dataset.lot_number,
            "backend": result.backend,
            "device": result.device,
            "gpu": gpu.gpu,
            "cuda_visible_devices": result.visible_devices or "unset",
            **{
                f"hardware_{k}": v
                for k, v in hardware.to_metadata().items()
                if isinstance(v, int | float | str | bool)
            },
            "steps": result.steps,
            "final_loss": result.losses[-1][1] if result.losses else float("nan"),
            "loss_curve": dg.MetadataValue.md(_plot_markdown(result.loss_plot) + losses),
            "losses": table(["step", "loss"], [[step, round(loss, 4)] for step, loss in result.losses]),
            "tokens_per_s": summary["tokens_per_s"] or 0.0,
            "time_to_first_step_s": summary["time_to_first_step_s"] or 0.0,
            "peak_memory_gib": summary["peak_memory_gib"] or 0.0,
            **({"gpu_memory_in_use_after_gib": held} if held is not None else {}),
            "device_name": result.device_name,
            "resumed_from_step": result.resumed_from_step,
            **({"loss_plot": dg.MetadataValue.path(str(result.loss_plot))} if result.loss_plot else {}),
            "trainable_params": result.trainable_params,
            "changed_params": result.changed_params,
            "runtime_s": round(result.runtime_s, 2),
            "files": file_hashes(result.files),
            "adapter_dir": dg.MetadataValue.path(str(result.adapter_dir)),
            "audit_head": head,
        },
    )


def _plot_markdown(plot: Path | None) -> str:
    """The loss-curve PNG inlined as a data URI (the Dagster UI renders it above the table)."""
    if plot is None or not plot.is_file():
        return ""
    data = base64.b64encode(plot.read_bytes()).decode("ascii")
    return f"![loss curve](data:image/png;base64,{data})\n\n"
