"""Merge: DARE-TIES of this job's adapter with the manifest's sources (other jobs or folders), or one adapter folded."""

from pathlib import Path

import dagster as dg

from foundry_assets.alchemist import AdapterRef, resolve_job_sources
from foundry_assets.audit_events import Event
from foundry_assets.defs.common import (
    OWNERS,
    STAGE_TAGS,
    failure,
    file_hashes,
    job_context,
    table,
)
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import (
    AuditTrailResource,
    GpuResource,
    PublisherResource,
    WorkspaceResource,
)
from foundry_assets.devices import device_metadata, resolve_device
from foundry_assets.errors import FoundryError
from foundry_assets.stages import MergedModel, TrainedAdapter
from foundry_assets.workspace import missing_weights_reason


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


@dg.asset(
    partitions_def=job_partitions,
    group_name="alchemist",
    kinds={"safetensors"},
    owners=OWNERS,
    tags=STAGE_TAGS,
)
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
    merge = job.manifest.merge
    source_jobs = [s.job for s in merge.sources if s.job]
    try:
        jobs = resolve_job_sources(
            job.manifest,
            workspace=job.workspace,
            trail_for=audit_trail.trail,
            recorded_lots={name: _recorded_lot(context.instance, name) for name in source_jobs},
            fetch=publisher.fetch,  # source adapters come from the registry they were published to
        )
    except FoundryError as e:
        job.audit(Event.MERGE_REFUSED, reason=str(e))
        raise dg.Failure(description=f"merge sources: {e}", allow_retries=False) from e
    adapters = []
    if merge.include_own_adapter:
        own = trained_adapter.adapter_dir
        # The stored value may name a folder that left the node after the job's publish.
        if own is None or not own.is_dir():
            reason = f"this job's adapter: {missing_weights_reason(own or job.workspace.adapter_dir(job.job_id), job.trail.records())}"
            job.audit(Event.MERGE_REFUSED, reason=reason)
            raise dg.Failure(description=reason, allow_retries=False)
        adapters.append(AdapterRef(own, merge.weight, merge.density, job.job_id))
    by_job = {source.job_id: source for source in jobs}
    for s in merge.sources:
        if s.job:
            adapters.append(by_job[s.job].ref())
        elif s.adapter:
            adapters.append(AdapterRef(Path(s.adapter), s.weight, s.density, Path(s.adapter).name))
    # torch is loaded here, in the step, not when the code location loads
    from foundry_assets.alchemist.merge import merge_adapters

    try:
        result = merge_adapters(
            base_model=Path(trained_adapter.model_path),
            adapters=adapters,
            out_dir=job.workspace.merged_dir(job.job_id),
            normalize=merge.normalize,
            seed=merge.seed,
            device=resolve_device(job.manifest.compute.device),  # "cuda" without a GPU: a Failure
        )
    except FoundryError as e:
        raise failure(e, "merge") from e
    lineage = [source.to_metadata() for source in jobs]
    head = job.audit(
        Event.MERGED,
        method=result.method,
        sources=result.sources,
        source_jobs=lineage,
        include_own_adapter=merge.include_own_adapter,
        files=result.files,
    )
    jobs_by_name = {source.job_id: source for source in jobs}
    sources = table(
        ["source", "job lot", "adapter sha256", "weight", "density"],
        [
            [
                s.get("name"),
                jobs_by_name[s["name"]].lot_number[:16] if s.get("name") in jobs_by_name else "—",
                str(s.get("sha256", {}).get("adapter_model.safetensors", ""))[:16],
                s.get("weight"),
                s.get("density"),
            ]
            for s in result.sources
        ],
    )
    value = MergedModel(
        lot_number=trained_adapter.lot_number,
        model_dir=result.out_dir,
        base_model=trained_adapter.model_path,
        method=result.method,
        device=result.device,
        dtype=result.dtype,
        files=result.files,
        adapter_dir=trained_adapter.adapter_dir,
        source_jobs=lineage,
        source_train_paths=[s.train_path for s in jobs if s.train_path],
    )
    return dg.Output(
        value,
        metadata={
            "lot_number": trained_adapter.lot_number,
            "method": result.method,
            **device_metadata(result.device),  # where it ran: CUDA, or the CPU when the model did not fit
            "gpu": gpu.gpu,
            "dtype": result.dtype,
            "sources": sources,
            "source_jobs": dg.MetadataValue.json(lineage),
            "source_job_ids": ", ".join(s.job_id for s in jobs) or "none",
            "include_own_adapter": merge.include_own_adapter,
            "config": dg.MetadataValue.json(result.config),
            "files": file_hashes(result.files),
            "model_dir": dg.MetadataValue.path(str(result.out_dir)),
            "audit_head": head,
        },
    )
