"""Merge: DARE-TIES of this job's adapter with the manifest's sources (other jobs or folders), or one adapter folded."""

from typing import Any

import dagster as dg

from foundry_assets.alchemist.stage import MergeOutcome, MergeRefused, merge_job
from foundry_assets.audit_events import Event
from foundry_assets.defs.common import (
    failure,
    file_hashes,
    job_context,
    stage_asset,
    table,
)
from foundry_assets.defs.resources import (
    AuditTrailResource,
    GpuResource,
    PublisherResource,
    WorkspaceResource,
)
from foundry_assets.devices import device_metadata
from foundry_assets.errors import FoundryError
from foundry_assets.stages import MergedModel, TrainedAdapter


def _recorded_lot(instance: dg.DagsterInstance, job_id: str) -> str | None:
    """The lot number of the latest `trained_adapter` materialization of partition `job_id`, if there is one."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("trained_adapter"), asset_partitions=[job_id]), limit=1
    )
    for record in result.records:
        materialization = record.asset_materialization
        value = materialization.metadata.get("lot_number") if materialization else None
        if value is not None:
            return str(value.value)
    return None


def _merge_metadata(outcome: MergeOutcome, *, gpu: str, head: str) -> dict[str, Any]:
    """What the UI shows of a merge: method, where it ran, the merged adapters as a table, lineage, files."""
    model, result = outcome.model, outcome.result
    return {
        "lot_number": model.lot_number,
        "method": result.method,
        **device_metadata(result.device),  # where it ran: CUDA, or the CPU when the model did not fit
        "gpu": gpu,
        "dtype": result.dtype,
        "sources": table(["source", "job lot", "adapter sha256", "weight", "density"], outcome.source_rows()),
        "source_jobs": dg.MetadataValue.json(model.source_jobs),
        "source_job_ids": ", ".join(s.job_id for s in outcome.jobs) or "none",
        "include_own_adapter": outcome.include_own_adapter,
        "config": dg.MetadataValue.json(result.config),
        "files": file_hashes(result.files),
        "model_dir": dg.MetadataValue.path(str(result.out_dir)),
        "audit_head": head,
    }


@stage_asset("alchemist", kinds={"safetensors"})
def merged_model(
    context: dg.AssetExecutionContext,
    trained_adapter: TrainedAdapter,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    gpu: GpuResource,
    publisher: PublisherResource,
) -> dg.Output[MergedModel]:
    """A loadable model folder: base + adapters combined by mergekit DARE-TIES (or one adapter folded in)."""
    job = job_context(context, workspace, audit_trail)
    source_jobs = [s.job for s in job.manifest.merge.sources if s.job]
    try:
        outcome = merge_job(
            job.manifest,
            trained_adapter,
            job.workspace,
            trail_for=audit_trail.trail,
            recorded_lots={name: _recorded_lot(context.instance, name) for name in source_jobs},
            fetch=publisher.fetch,  # source adapters come from the registry they were published to
        )
    except MergeRefused as e:
        job.audit(Event.MERGE_REFUSED, reason=e.reason)
        raise dg.Failure(description=str(e), allow_retries=False) from e
    except FoundryError as e:  # compute.device "cuda" without a GPU, or a merge that cannot run
        raise failure(e, "merge") from e
    head = job.audit(Event.MERGED, **outcome.merged_record())
    return dg.Output(outcome.model, metadata=_merge_metadata(outcome, gpu=gpu.gpu, head=head))
