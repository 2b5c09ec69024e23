"""Select: accept the job, snapshot its data drop and fix the lot number before anything trains."""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from foundry_assets.audit_events import Event
from foundry_assets.defs.common import JobContext, job_context, stage_asset
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.intake.fingerprint import environment_fingerprint
from foundry_assets.intake.receive import DROP_SHA256_TAG, receive_job
from foundry_assets.intake.stage import nothing_to_run, snapshot_drop
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


def _received_job(
    context: dg.AssetExecutionContext,
    config: LaunchConfig,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> JobContext:
    """The partition's job, received first from the run's drop or pasted manifest when it brings one."""
    received = receive_job(
        workspace.workspace,
        job_id=context.partition_key,
        drop=config.drop,
        manifest_yaml=config.manifest_yaml,
        drop_sha256=context.run.tags.get(DROP_SHA256_TAG),
        s3_client=publisher.s3.get_client,
    )
    if received:
        context.log.info(received)
    return job_context(context, workspace, audit_trail)


@stage_asset("intake", kinds={"jsonl"}, output_required=False)
def raw_data(
    context: dg.AssetExecutionContext,
    config: LaunchConfig,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> Iterator[dg.Output[RawData]]:
    """The job's data drop, copied into the job folder and hashed with its manifest (the lot number), and the
    environment it is made in; nothing for a lot already released (`nothing_to_run`): the later stages skip."""
    try:
        job = _received_job(context, config, workspace, audit_trail, publisher)
        raw = snapshot_drop(job.manifest, job.workspace)
        if published := nothing_to_run(
            job.manifest, raw.lot_number, job.workspace, job.trail, publisher.verify
        ):
            context.log.info(published)  # and the later stages skip
            return
    except FoundryError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    manifest, environment = job.manifest, environment_fingerprint().to_dict()
    head = job.audit(
        Event.JOB_ACCEPTED,
        manifest=manifest.model_dump(mode="json"),
        source_data=manifest.data.path,
        lines=raw.lines,
        environment=environment,
        **raw.lot(),
    )
    context.log.info(f"Job {job.job_id} accepted: lot {raw.lot_number}")
    yield dg.Output(
        raw,
        metadata={
            **raw.lot(),
            "method": manifest.method_config.type,
            "base_model": manifest.base_model,
            "source_data": dg.MetadataValue.path(manifest.data.path),
            "snapshot": dg.MetadataValue.path(str(raw.data_path)),
            "lines": raw.lines,
            "environment": dg.MetadataValue.json(environment),
            "audit_head": head,
        },
    )
