"""Prune: SemDeDup over MiniLM embeddings, format for the strategy, hold out the exam split."""

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.curator.stage import curate
from foundry_assets.defs.common import failure, job_context, stage_asset, table
from foundry_assets.defs.resources import AuditTrailResource, EmbedderResource, GpuResource, WorkspaceResource
from foundry_assets.devices import device_metadata, resolve_device
from foundry_assets.errors import FoundryError
from foundry_assets.stages import CuratedDataset, RawData


@stage_asset("curator", kinds={"jsonl"})
def curated_dataset(
    context: dg.AssetExecutionContext,
    raw_data: RawData,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    embedder: EmbedderResource,
    gpu: GpuResource,
) -> dg.Output[CuratedDataset]:
    """Near-duplicates removed (cosine above the threshold), formatted for the trainer, split train/test."""
    job = job_context(context, workspace, audit_trail)
    curation = job.manifest.curation
    try:
        # compute.device "cuda" without a GPU: a Failure without retries
        device = resolve_device(job.manifest.compute.device)
        encoder = embedder.embedder(curation.embedding_model, device, curation.batch_size)
        result = curate(raw_data, job.manifest, job.workspace, encoder)
    except FoundryError as e:
        raise failure(e, "curation") from e
    counts = result.to_metadata()
    head = job.audit(Event.DATA_CURATED, **counts)
    context.log.info(
        f"Curated {result.rows_in} rows on {device}: kept {result.kept}, removed {result.removed}"
    )
    examples = table(
        ["removed", "kept (representative)", "cosine"],
        [[e["removed"][:120], e["kept"][:120], round(e["similarity"], 4)] for e in result.removed_examples],
    )
    return dg.Output(
        result.dataset(raw_data.lot_number),
        metadata={
            "lot_number": raw_data.lot_number,
            **{k: v for k, v in counts.items() if isinstance(v, int | float | str) and not k.endswith("_md")},
            "threshold": curation.similarity_threshold,
            "embedding_batch_size": encoder.batch_size,
            **device_metadata(device),
            "gpu": gpu.gpu,
            "removed_examples": examples,
            "similarity_histogram": dg.MetadataValue.md(result.similarity_histogram_md),
            "train_path": dg.MetadataValue.path(str(result.train_path)),
            "audit_head": head,
        },
    )
