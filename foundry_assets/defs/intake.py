"""Select: accept the job, snapshot its data drop and fix the lot number before anything trains."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from foundry_assets.audit_events import Event
from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.defs.common import OWNERS, STAGE_TAGS, job_context
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError, ManifestError
from foundry_assets.fsio import copy_file
from foundry_assets.intake.drops import DROP_SHA256_TAG, receive_location, receive_manifest_text
from foundry_assets.intake.lot import compute_lot
from foundry_assets.stages import RawData


class LaunchConfig(dg.Config):
    """How a run brings a job that is not registered yet. Leave both empty for a job registered by `foundry run`."""

    drop: str = Field(
        "",
        description="A drop to receive first: a folder, file:///folder or s3://bucket/prefix/drop/ holding "
        "manifest.yaml and its data (the drop sensor sets this).",
    )
    manifest_yaml: str = Field(
        "",
        description="A training manifest pasted as YAML (validated like a manifest file); its job_id must be this "
        "run's partition and its data.path an absolute path on the node.",
    )


def _receive(
    context: dg.AssetExecutionContext, config: LaunchConfig, workspace: WorkspaceResource, s3: Any
) -> None:
    try:
        if config.drop and config.manifest_yaml:
            raise ManifestError("launch config: give `drop` or `manifest_yaml`, not both")
        if config.drop:
            tag = context.run.tags.get(DROP_SHA256_TAG)
            drop = receive_location(
                config.drop,
                workspace.workspace,
                s3_client=s3,
                job_id=context.partition_key,
                content_sha256=tag,
            )
            context.log.info(f"Received drop {drop.name!r} as job {drop.job_id}")
        elif config.manifest_yaml:
            receive_manifest_text(config.manifest_yaml, workspace.workspace, job_id=context.partition_key)
            context.log.info(f"Registered the launchpad's manifest as job {context.partition_key}")
    except FoundryError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e


@dg.asset(
    partitions_def=job_partitions,
    group_name="intake",
    kinds={"jsonl"},
    owners=OWNERS,
    tags=STAGE_TAGS,
)
def raw_data(
    context: dg.AssetExecutionContext,
    config: LaunchConfig,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> dg.Output[RawData]:
    """The job's data drop, copied into the job folder and hashed with its manifest: the lot number."""
    _receive(context, config, workspace, publisher.s3.get_client)
    job = job_context(context, workspace, audit_trail)
    manifest = job.manifest
    strategy = get_strategy(manifest.method_config.type)
    snapshot_dir = job.stage_dir("raw")
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_dir / f"data{Path(manifest.data.path).suffix or '.jsonl'}"
    try:
        copy_file(manifest.data.path, snapshot)
        lot = compute_lot(snapshot, manifest)
    except (OSError, FoundryError) as e:
        raise dg.Failure(description=f"data.path {manifest.data.path!r}: {e}", allow_retries=False) from e
    with open(snapshot, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    head = job.audit(
        Event.JOB_ACCEPTED,
        manifest=manifest.model_dump(mode="json"),
        source_data=manifest.data.path,
        lines=lines,
        **lot.to_metadata(),
    )
    context.log.info(f"Job {job.job_id} accepted: lot {lot.lot_number}")
    value = RawData(
        job_id=job.job_id,
        data_path=snapshot,
        lines=lines,
        data_format=strategy.data_format,
        **lot.to_metadata(),
    )
    return dg.Output(
        value,
        metadata={
            **lot.to_metadata(),
            "method": manifest.method_config.type,
            "base_model": manifest.base_model,
            "source_data": dg.MetadataValue.path(manifest.data.path),
            "snapshot": dg.MetadataValue.path(str(snapshot)),
            "lines": lines,
            "audit_head": head,
        },
    )
