"""Merge: DARE-TIES of this job's adapter with the manifest's sources, or the adapter folded into the base."""

from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.alchemist import AdapterRef, merge_adapters
from foundry_assets.defs.common import failure, job_context, lot_metadata, markdown_table
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, WorkspaceResource
from foundry_assets.errors import FoundryError


@dg.asset(partitions_def=job_partitions, group_name="merge", kinds={"safetensors"})
def merged_model(
    context: dg.AssetExecutionContext,
    trained_adapter: dict[str, Any],
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
) -> dg.Output[dict[str, Any]]:
    """A loadable model folder: base + adapters combined by mergekit DARE-TIES (or one adapter folded in)."""
    job = job_context(context, workspace, audit_trail)
    merge = job.manifest.merge
    adapters = [AdapterRef(Path(trained_adapter["adapter_dir"]), merge.weight, merge.density, job.job_id)]
    adapters += [
        AdapterRef(Path(s.adapter), s.weight, s.density, Path(s.adapter).name) for s in merge.sources
    ]
    try:
        result = merge_adapters(
            base_model=Path(trained_adapter["model_path"]),
            adapters=adapters,
            out_dir=Path(job.stage_dir("merged")),
            normalize=merge.normalize,
            seed=merge.seed,
            cache_dir=Path(job.stage_dir("merge-cache")),
        )
    except FoundryError as e:
        raise failure(e, "merge") from e
    head = job.audit("merged", method=result.method, sources=result.sources, files=result.files)
    sources = markdown_table(
        ["source", "weight", "density"],
        [[s.get("name"), s.get("weight"), s.get("density")] for s in result.sources],
    )
    value = {
        **lot_metadata(trained_adapter),
        "model_dir": str(result.out_dir),
        "method": result.method,
        "files": result.files,
        "base_model": trained_adapter["model_path"],
        "adapter_dir": trained_adapter["adapter_dir"],
    }
    return dg.Output(
        value,
        metadata={
            **lot_metadata(trained_adapter),
            "method": result.method,
            "sources": dg.MetadataValue.md(sources),
            "config": dg.MetadataValue.json(result.config),
            "files": dg.MetadataValue.json(result.files),
            "model_dir": dg.MetadataValue.path(str(result.out_dir)),
            "audit_head": head,
        },
    )
