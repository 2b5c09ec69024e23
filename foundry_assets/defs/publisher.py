"""Distribute: stage the artifact, push it to the manifest's registry, verify, record, remove staging, then remove the
job's weights from the node (only the records stay: manifest, audit trail, curated data, exam report)."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.defs.common import (
    OWNERS,
    STAGE_TAGS,
    JobContext,
    failure,
    file_hashes,
    job_context,
)
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.manifest import PublishTarget
from foundry_assets.publisher import PublishResult, PublishStepError, deployment_payload, stage_artifact
from foundry_assets.stages import ExamResult, MergedModel, PublishedArtifact
from foundry_assets.workspace import missing_weights_reason


def _published_record(
    records: list[dict[str, Any]], target: PublishTarget, lot: str, *, since_latest_exam: bool
) -> dict[str, Any] | None:
    """The latest `published` record of this lot under this tag; with `since_latest_exam`, only one written after the
    latest exam verdict (then this publish step is running again for the same exam)."""
    start = 0
    if since_latest_exam:
        verdict = next((r for r in reversed(records) if r["event"] == Event.EXAM_VERDICT), None)
        if verdict is None or verdict["data"].get("lot_number") != lot:
            return None
        start = verdict["seq"]
    for record in reversed(records):
        if record["seq"] <= start:
            return None
        data = record["data"]
        if (
            record["event"] == Event.PUBLISHED
            and data.get("tag") == target.tag
            and data.get("registry", target.registry) == target.registry
            and data.get("lot_number", lot) == lot
        ):
            return record
    return None


def _refuse_rebuilt_weights(
    job: JobContext, publisher: PublisherResource, target: PublishTarget, before: dict[str, Any]
) -> None:
    """A re-run of an already-published lot rebuilt weights that differ from the tag's: keep the registry's verified
    copy as the job's artifact, remove the rebuilt weights from the node, and say so. Returns (for the plain refusal)
    only when the registry copy no longer verifies."""
    data = before["data"]
    try:
        publisher.verify(target.registry, target.tag, dict(data.get("files") or {}))
    except FoundryError:
        return
    _head, removed = _remove_weights(job, after=before["sha256"])
    raise dg.Failure(
        description=f"publish: lot {str(data.get('lot_number', ''))[:12]}… of job {job.job_id} is already published "
        f"to {data.get('uri')} (audit record #{before['seq']}), and that copy is verified. This run rebuilt the "
        "weights and they differ byte for byte (training is not bit-reproducible), so they are not published over "
        f"the tag; they were removed from the node ({removed['bytes_freed']} bytes). The published artifact stays "
        "this job's; to publish a new training, register it under a new job_id and tag.",
        allow_retries=False,
    )


def _remove_weights(job: JobContext, after: str) -> tuple[str, dict[str, Any]]:
    """Remove the job's weight folders after a verified publish; record what was freed. Returns (head, summary)."""
    removed = job.workspace.remove_weights(job.job_id)
    summary = removed.to_metadata()
    if not removed.folders and not removed.failed:
        return after, summary
    head = job.audit(Event.NODE_WEIGHTS_REMOVED, after=after, **summary)
    if removed.failed:
        raise dg.Failure(
            description=f"node cleanup: the artifact is published, but {sorted(removed.failed)} could not be removed "
            f"from {job.workspace.job_dir(job.job_id)}: {removed.failed}; fix the cause and run published_artifact "
            "again (it re-verifies the registry copy and retries the cleanup)",
            allow_retries=False,
        )
    return head, summary


@dg.asset(
    partitions_def=job_partitions,
    group_name="publisher",
    kinds={"folder"},
    owners=OWNERS,
    tags=STAGE_TAGS,
)
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
    # The blocking check stops this step inside one run; this guard holds the gate across runs as well.
    if not exam_report.passed:
        job.audit(Event.PUBLISH_REFUSED, reasons=exam_report.reasons)
        raise dg.Failure(
            description=f"Exam for job {job.job_id} did not pass; nothing is published: "
            + "; ".join(exam_report.reasons),
            allow_retries=False,
        )
    if exam_report.lot_number != merged_model.lot_number:
        raise dg.Failure(
            description="exam_report and merged_model come from different lots; re-run the exam."
        )
    target = job.manifest.publish_target
    kind: str = target.artifact
    if kind == "auto":
        kind = "merged_model" if job.manifest.merge.sources else "adapter"
    try:
        records = job.trail.records()
    except FoundryError as e:
        raise failure(e, "publish: the job's audit trail") from e
    heads: list[str] = []

    def record(result: PublishResult) -> None:  # after verification, before staging is removed
        heads.append(
            job.audit(
                Event.PUBLISHED,
                uri=result.uri,
                tag=result.tag,
                registry=target.registry,
                status=result.status,
                artifact=kind,
                artifact_sha256=result.artifact_sha256,
                files=result.files,
                lot_number=exam_report.lot_number,
            )
        )

    lot = exam_report.lot_number
    earlier = _published_record(records, target, lot, since_latest_exam=True)
    try:
        if earlier is not None:
            # This lot is already published under this tag (a re-run, e.g. to retry a deployment notice): its weights
            # may have left the node, so the registry copy is re-verified against the publish record instead.
            kind = str(earlier["data"].get("artifact") or kind)
            result = publisher.verify(target.registry, target.tag, dict(earlier["data"].get("files") or {}))
            record(result)
        else:
            source_dir = merged_model.model_dir if kind == "merged_model" else merged_model.adapter_dir
            if not source_dir or not Path(source_dir).is_dir():
                reason = missing_weights_reason(source_dir or job.workspace.adapter_dir(job.job_id), records)
                job.audit(Event.PUBLISH_FAILED, registry=target.registry, tag=target.tag, reason=reason)
                raise dg.Failure(description=f"publish: the {kind}: {reason}", allow_retries=False)
            staging = stage_artifact(
                Path(source_dir),
                job.workspace.staging_dir(job.job_id, target.tag),
                kind=kind,
                manifest_dict=job.manifest.model_dump(mode="json"),
                exam_report_dict=exam_report.document(),
            )
            result = publisher.push(staging, target.tag, registry=target.registry, on_verified=record)
    except FoundryError as e:
        job.audit(Event.PUBLISH_FAILED, registry=target.registry, tag=target.tag, reason=str(e))
        before = _published_record(records, target, lot, since_latest_exam=False)
        if isinstance(e, PublishStepError) and e.step == "compare" and before is not None:
            _refuse_rebuilt_weights(job, publisher, target, before)
        raise failure(e, "publish") from e
    context.log.info(f"Published {kind} of job {job.job_id} to {result.uri} ({result.status})")
    head, removed = _remove_weights(job, after=heads[-1])
    context.log.info(
        f"Removed the weights of job {job.job_id} from this node ({removed['bytes_freed']} bytes: "
        f"{', '.join(removed['folders']) or 'nothing left'}); the registry holds {result.uri}"
    )
    yield dg.Output(
        PublishedArtifact(
            lot_number=lot,
            uri=result.uri,
            tag=result.tag,
            status=result.status,
            artifact=kind,
            artifact_sha256=result.artifact_sha256,
            files=result.files,
            weights_removed=removed,
        ),
        metadata={
            "lot_number": lot,
            "uri": dg.MetadataValue.url(result.uri),
            "tag": result.tag,
            "status": result.status,
            "artifact": kind,
            "artifact_sha256": result.artifact_sha256,
            "files": file_hashes(result.files),
            "weights_removed": dg.MetadataValue.json(removed),
            "bytes_freed": removed["bytes_freed"],
            "audit_head": head,
        },
    )
    if target.trigger_deployment and target.webhook_url:
        payload = deployment_payload(result, lot_number=lot, job_id=job.job_id)
        try:
            delivery = publisher.notify(target.webhook_url, payload)
        except FoundryError as e:
            # The artifact stays published; the failed notice fails this step so an operator sees it.
            job.audit(Event.DEPLOYMENT_NOTICE_FAILED, uri=result.uri, reason=str(e))
            raise failure(e, "deployment notice") from e
        job.audit(Event.DEPLOYMENT_NOTIFIED, **delivery.to_metadata())
        context.log.info(
            f"Deployment notice delivered ({delivery.status_code}, {delivery.attempts} attempt(s))"
        )
