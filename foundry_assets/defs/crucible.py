"""Train: the crucible trains the strategy's adapter (`crucible.train_job`); this asset is its Dagster wiring."""

import base64
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.crucible import TrainingRun, train_job
from foundry_assets.defs.common import (
    failure,
    file_hashes,
    job_context,
    markdown_table,
    stage_asset,
    table,
)
from foundry_assets.defs.resources import AuditTrailResource, GpuResource, WorkspaceResource
from foundry_assets.errors import FoundryError, HardwareIncompatibleError
from foundry_assets.stages import CuratedDataset, TrainedAdapter


@stage_asset("crucible", kinds={"pytorch", "safetensors"}, pool="gpu")
def trained_adapter(
    context: dg.AssetExecutionContext,
    curated_dataset: CuratedDataset,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    gpu: GpuResource,
) -> dg.Output[TrainedAdapter]:
    """The LoRA/DoRA adapter (safetensors) and tokenizer trained by the manifest's strategy."""
    job = job_context(context, workspace, audit_trail)
    try:
        trained = train_job(job.manifest, curated_dataset, job.workspace, job.audit, log=context.log)
    except HardwareIncompatibleError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    except FoundryError as e:
        raise failure(e, "training") from e
    lot = {"lot_number": curated_dataset.lot_number}
    if trained.run is None:
        return dg.Output(
            trained.adapter, metadata={**lot, "skipped": "merge-only job", "audit_head": trained.audit_head}
        )
    return dg.Output(
        trained.adapter,
        metadata={**lot, **_run_metadata(trained.run, gpu.gpu), "audit_head": trained.audit_head},
    )


def _run_metadata(run: TrainingRun, gpu: str) -> dict[str, Any]:
    """How the adapter was trained, for the UI: backend and device, the loss curve, speed, memory, file hashes."""
    result, summary, held = run.result, run.result.to_metadata(), run.memory_held_gib
    losses = markdown_table(["step", "loss"], [[step, f"{loss:.4f}"] for step, loss in result.losses])
    return {
        "backend": result.backend,
        "device": result.device,
        "gpu": gpu,
        "cuda_visible_devices": result.visible_devices or "unset",
        **{
            f"hardware_{k}": v
            for k, v in run.hardware.to_metadata().items()
            if isinstance(v, int | float | str | bool)
        },
        "steps": result.steps,
        "final_loss": result.losses[-1][1] if result.losses else float("nan"),
        "loss_curve": dg.MetadataValue.md(_plot_markdown(result.loss_plot) + losses),
        "losses": table(["step", "loss"], [[step, round(loss, 4)] for step, loss in result.losses]),
        "tokens_per_s": summary["tokens_per_s"] or 0.0,
        "time_to_first_step_s": summary["time_to_first_step_s"] or 0.0,
        "peak_memory_gib": summary["peak_memory_gib"] or 0.0,
        "batching": dg.MetadataValue.json(summary["batching"]),
        "padding_share": summary["padding_share"] if summary["padding_share"] is not None else float("nan"),
        **({"gpu_memory_in_use_after_gib": held} if held is not None else {}),
        "device_name": result.device_name,
        "resumed_from_step": result.resumed_from_step,
        **({"loss_plot": dg.MetadataValue.path(str(result.loss_plot))} if result.loss_plot else {}),
        "trainable_params": result.trainable_params,
        "changed_params": result.changed_params,
        "runtime_s": round(result.runtime_s, 2),
        "files": file_hashes(result.files),
        "adapter_dir": dg.MetadataValue.path(str(result.adapter_dir)),
    }


def _plot_markdown(plot: Path | None) -> str:
    """The loss-curve PNG inlined as a data URI (the Dagster UI renders it above the table)."""
    if plot is None or not plot.is_file():
        return ""
    data = base64.b64encode(plot.read_bytes()).decode("ascii")
    return f"![loss curve](data:image/png;base64,{data})\n\n"
