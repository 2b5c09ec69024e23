"""Distribute: stage the artifact, push it to the manifest's registry, verify, record, remove staging, then remove the
job's weights from the node (only the records stay: manifest, audit trail, curated data, exam report). The rules live
in `publisher.publish_job`; this asset wires Dagster's resources to it and reports its result."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.defs.common import JobContext, file_hashes, job_context, stage_asset
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.publisher import PublishJobError, announce, publish_job
from foundry_assets.stages import ExamResult, MergedModel, PublishedArtifact


@contextmanager
def _as_failure() -> Iterator[None]:
    """A refused or failed publish as a Dagster failure with the domain's description and retry advice."""
    try:
        yield
    except PublishJobError as e:
        raise dg.Failure(description=str(e), allow_retries=e.allow_retries) from e


def _released(job: JobContext, log: dg.DagsterLogManager) -> bool:
    """The QA release gate (`release.require_approval`), decided from the trail: approved → publish; pending → record
    `release_pending` and publish nothing (the release sensor starts this step again once the approvals count);
    rejected → record `release_rejected` and fail for good."""
    if not job.manifest.release.require_approval:
        return True
    from foundry_assets.release.gate import release_decision  # cryptography loads in the step only

    try:
        decision = release_decision(job.manifest, job.workspace, job.trail.records())
    except FoundryError:  # no passed exam of the current lot: publish_job refuses that on its own terms
        return True
    if decision.state == "approved":
        log.info(f"Release of job {job.job_id}: {decision.detail}")
        return True
    job.audit(
        Event.RELEASE_REJECTED if decision.state == "rejected" else Event.RELEASE_PENDING,
        **decision.to_record(),
    )
    if decision.state == "rejected":
        raise dg.Failure(
            description=f"job {job.job_id}: {decision.detail}; nothing is published", allow_retries=False
        )
    log.info(f"Release of job {job.job_id} pending, nothing published: {decision.detail}")
    return False


@stage_asset("publisher", kinds={"folder"}, output_required=False)
def published_artifact(
    context: dg.AssetExecutionContext,
    exam_report: ExamResult,
    merged_model: MergedModel,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> Iterator[dg.Output[PublishedArtifact]]:
    """The verified artifact in the registry: weights, manifest, exam report, model card and MANIFEST.sha256."""
    job = job_context(context, workspace, audit_trail)
    if not _released(job, context.log):
        return
    with _as_failure():
        published = publish_job(
            job.manifest,
            exam_report,
            merged_model,
            job.workspace,
            job.trail,
            publisher,
            job.audit,
            log=context.log,
        )
    artifact = published.artifact
    yield dg.Output(
        artifact,
        metadata={
            "lot_number": artifact.lot_number,
            "uri": dg.MetadataValue.url(artifact.uri),
            "tag": artifact.tag,
            "status": artifact.status,
            "artifact": artifact.artifact,
            "artifact_sha256": artifact.artifact_sha256,
            "files": file_hashes(artifact.files),
            "weights_removed": dg.MetadataValue.json(artifact.weights_removed),
            "bytes_freed": artifact.weights_removed["bytes_freed"],
            "audit_head": published.audit_head,
        },
    )
    # After the Output: an operator sees the artifact published even when the notice then fails this step.
    with _as_failure():
        announce(job.manifest, published, publisher, job.audit, log=context.log)
