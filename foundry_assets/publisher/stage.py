"""The Distribute stage's entry point: `publish_job` publishes one job's examined artifact by the foundry's rules, with
no Dagster in it.

The rules, in order: a failed exam is never published (the blocking check stops the step within one run; this holds
the gate across runs too), and the exam and the model must come from one lot. `artifact: auto` publishes the merged
model when merge sources are named. A lot already published under the tag since its latest exam is re-verified from
the registry instead of staged again (its weights may have left the node). Otherwise the artifact is staged, pushed and
verified, and the `published` record is written after verification and before staging is removed. A re-run whose
rebuilt weights differ from the verified tag is refused without touching the tag. Once published, the job's weights
leave the node (only its records stay). The deployment notice (`announce`) is the caller's last step, after it has
reported the artifact, so a failed notice never hides a verified publish.

Every decision goes to the audit trail through `on_event` (the caller's audit writer, which returns the trail's new
head); registries and the webhook are reached through `Registry` (the Dagster layer passes its `PublisherResource`).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event, OnEvent, Record, after, latest
from foundry_assets.errors import FoundryError, PublishError
from foundry_assets.manifest import PublishTarget, TrainingManifest
from foundry_assets.publisher.base import PublishResult, PublishStepError
from foundry_assets.publisher.layout import stage_artifact
from foundry_assets.publisher.webhook import DeliveryResult, deployment_payload
from foundry_assets.stages import ExamResult, MergedModel, PublishedArtifact
from foundry_assets.workspace import Workspace, missing_weights_reason

logger = logging.getLogger(__name__)


class Registry(Protocol):
    """How the stage reaches registries and the deployment webhook (`defs.resources.PublisherResource` is one)."""

    def push(
        self,
        staging: Path,
        version_tag: str,
        *,
        registry: str,
        on_verified: Callable[[PublishResult], None] | None = None,
    ) -> PublishResult: ...

    def verify(self, registry: str, tag: str, files: dict[str, str]) -> PublishResult: ...

    def notify(self, url: str, payload: dict[str, Any]) -> DeliveryResult: ...


class PublishJobError(PublishError):
    """A publish refused or failed, with the whole description an operator reads; `allow_retries` says whether
    running the step again unchanged could help (only for inputs that a re-run upstream may still fix)."""

    def __init__(self, message: str, *, allow_retries: bool = False) -> None:
        super().__init__(message)
        self.allow_retries = allow_retries


@dataclass(frozen=True)
class PublishJobResult:
    """`publish_job`'s answer: the stage result, the registry's answer and the audit head the step left."""

    artifact: PublishedArtifact
    publish: PublishResult
    audit_head: str


@dataclass(frozen=True)
class _Job:
    """What every rule of one publish reads: the job, where it goes, how to reach it, and its audit records."""

    manifest: TrainingManifest
    workspace: Workspace
    registry: Registry
    on_event: OnEvent
    records: list[Record]
    lot: str

    @property
    def job_id(self) -> str:
        return self.manifest.job_id

    @property
    def target(self) -> PublishTarget:
        return self.manifest.publish_target


def publish_job(
    manifest: TrainingManifest,
    exam: ExamResult,
    merged: MergedModel,
    workspace: Workspace,
    trail: AuditTrail,
    registry: Registry,
    on_event: OnEvent,
    *,
    log: logging.Logger = logger,
) -> PublishJobResult:
    """Publish the job's examined artifact to the manifest's registry, then remove the job's weights from the node.

    Raises `PublishJobError` (after recording `publish_refused` or `publish_failed` where the rules say so) when the
    exam failed, the lots differ, the weights are gone, the registry refuses or fails, or the node cleanup fails.
    """
    _check_gate(manifest.job_id, exam, merged, on_event)
    try:
        records = trail.records()
    except FoundryError as e:
        raise PublishJobError(f"publish: the job's audit trail: {e}") from e
    job = _Job(manifest, workspace, registry, on_event, records, exam.lot_number)
    kind, result, published_head = _publish(job, exam, merged)
    log.info(f"Published {kind} of job {job.job_id} to {result.uri} ({result.status})")
    head, removed = _remove_weights(job, after=published_head)
    log.info(
        f"Removed the weights of job {job.job_id} from this node ({removed['bytes_freed']} bytes: "
        f"{', '.join(removed['folders']) or 'nothing left'}); the registry holds {result.uri}"
    )
    artifact = PublishedArtifact(
        lot_number=job.lot,
        uri=result.uri,
        tag=result.tag,
        status=result.status,
        artifact=kind,
        artifact_sha256=result.artifact_sha256,
        files=result.files,
        weights_removed=removed,
    )
    return PublishJobResult(artifact, result, head)


def announce(
    manifest: TrainingManifest,
    published: PublishJobResult,
    registry: Registry,
    on_event: OnEvent,
    *,
    log: logging.Logger = logger,
) -> DeliveryResult | None:
    """Send the deployment notice the manifest asks for (None when it asks for none) and record its outcome.

    A failed notice never un-publishes: it is recorded and raised as `PublishJobError`, so the caller's step fails
    where an operator sees it, after the artifact was reported.
    """
    target = manifest.publish_target
    if not (target.trigger_deployment and target.webhook_url):
        return None
    result = published.publish
    payload = deployment_payload(result, lot_number=published.artifact.lot_number, job_id=manifest.job_id)
    try:
        delivery = registry.notify(target.webhook_url, payload)
    except FoundryError as e:
        on_event(Event.DEPLOYMENT_NOTICE_FAILED, uri=result.uri, reason=str(e))
        raise PublishJobError(f"deployment notice: {e}") from e
    on_event(Event.DEPLOYMENT_NOTIFIED, **delivery.to_metadata())
    log.info(f"Deployment notice delivered ({delivery.status_code}, {delivery.attempts} attempt(s))")
    return delivery


def artifact_kind(manifest: TrainingManifest) -> str:
    """What the manifest publishes: `artifact: auto` is the merged model when merge sources are named."""
    kind: str = manifest.publish_target.artifact
    if kind == "auto":
        kind = "merged_model" if manifest.merge.sources else "adapter"
    return kind


def _check_gate(job_id: str, exam: ExamResult, merged: MergedModel, on_event: OnEvent) -> None:
    """The exam gate across runs (the blocking check holds it within one), and one lot for exam and model."""
    if not exam.passed:
        on_event(Event.PUBLISH_REFUSED, reasons=exam.reasons)
        raise PublishJobError(
            f"Exam for job {job_id} did not pass; nothing is published: " + "; ".join(exam.reasons)
        )
    if exam.lot_number != merged.lot_number:
        raise PublishJobError(
            "exam_report and merged_model come from different lots; re-run the exam.", allow_retries=True
        )


def _publish(job: _Job, exam: ExamResult, merged: MergedModel) -> tuple[str, PublishResult, str]:
    """Push the staged artifact, or re-verify the registry copy of a lot already published since its latest exam.
    Returns (artifact kind, the registry's answer, head of the `published` record)."""
    target, kind = job.target, artifact_kind(job.manifest)
    earlier = published_record(job.records, target, job.lot, since_latest_exam=True)
    if earlier is not None:
        kind = str(earlier["data"].get("artifact") or kind)
    heads: list[str] = []

    def record(result: PublishResult) -> None:  # after verification, before staging is removed
        heads.append(_record_published(job, result, kind))

    try:
        if earlier is not None:
            # This lot is already published under this tag (a re-run, e.g. to retry a deployment notice): its
            # weights may have left the node, so the registry copy is re-verified against the publish record.
            result = job.registry.verify(
                target.registry, target.tag, dict(earlier["data"].get("files") or {})
            )
            record(result)
        else:
            staging = _stage(job, exam, merged, kind)
            result = job.registry.push(staging, target.tag, registry=target.registry, on_verified=record)
    except PublishJobError:
        raise  # the weights are gone (recorded by `_stage`): not a registry failure
    except FoundryError as e:
        job.on_event(Event.PUBLISH_FAILED, registry=target.registry, tag=target.tag, reason=str(e))
        before = published_record(job.records, target, job.lot, since_latest_exam=False)
        if isinstance(e, PublishStepError) and e.step == "compare" and before is not None:
            _refuse_rebuilt_weights(job, before)
        raise PublishJobError(f"publish: {e}") from e
    return kind, result, heads[-1]


def _stage(job: _Job, exam: ExamResult, merged: MergedModel, kind: str) -> Path:
    """Lay out the artifact in the job's staging folder; missing weights are recorded as a failed publish, with why
    they are gone and what to do."""
    source = merged.model_dir if kind == "merged_model" else merged.adapter_dir
    if not source or not Path(source).is_dir():
        reason = missing_weights_reason(source or job.workspace.adapter_dir(job.job_id), job.records)
        job.on_event(Event.PUBLISH_FAILED, registry=job.target.registry, tag=job.target.tag, reason=reason)
        raise PublishJobError(f"publish: the {kind}: {reason}")
    return stage_artifact(
        Path(source),
        job.workspace.staging_dir(job.job_id, job.target.tag),
        kind=kind,
        manifest_dict=job.manifest.model_dump(mode="json"),
        exam_report_dict=exam.document(),
    )


def _record_published(job: _Job, result: PublishResult, kind: str) -> str:
    return job.on_event(
        Event.PUBLISHED,
        uri=result.uri,
        tag=result.tag,
        registry=job.target.registry,
        status=result.status,
        artifact=kind,
        artifact_sha256=result.artifact_sha256,
        files=result.files,
        lot_number=job.lot,
    )


def published_record(
    records: list[Record], target: PublishTarget, lot: str, *, since_latest_exam: bool
) -> Record | None:
    """The latest `published` record of this lot under this tag; with `since_latest_exam`, only one written after the
    latest exam verdict (then this publish step is running again for the same exam)."""
    start = 0
    if since_latest_exam:
        verdict = latest(records, Event.EXAM_VERDICT)
        if verdict is None or verdict["data"].get("lot_number") != lot:
            return None
        start = verdict["seq"]
    matching = [
        record
        for record in after(records, Event.PUBLISHED, start)
        if record["data"].get("tag") == target.tag
        and record["data"].get("registry", target.registry) == target.registry
        and record["data"].get("lot_number", lot) == lot
    ]
    return matching[-1] if matching else None


def _refuse_rebuilt_weights(job: _Job, before: Record) -> None:
    """A re-run of an already-published lot rebuilt weights that differ from the tag's: keep the registry's verified
    copy as the job's artifact, remove the rebuilt weights from the node, and say so. Returns (for the plain refusal)
    only when the registry copy no longer verifies."""
    data = before["data"]
    try:
        job.registry.verify(job.target.registry, job.target.tag, dict(data.get("files") or {}))
    except FoundryError:
        return
    _head, removed = _remove_weights(job, after=before["sha256"])
    raise PublishJobError(
        f"publish: lot {str(data.get('lot_number', ''))[:12]}… of job {job.job_id} is already published "
        f"to {data.get('uri')} (audit record #{before['seq']}), and that copy is verified. This run rebuilt the "
        "weights and they differ byte for byte (training is not bit-reproducible), so they are not published over "
        f"the tag; they were removed from the node ({removed['bytes_freed']} bytes). The published artifact stays "
        "this job's; to publish a new training, register it under a new job_id and tag."
    )


def _remove_weights(job: _Job, after: str) -> tuple[str, dict[str, Any]]:
    """Remove the job's weight folders after a verified publish; record what was freed. Returns (head, summary)."""
    removed = job.workspace.remove_weights(job.job_id)
    summary = removed.to_metadata()
    if not removed.folders and not removed.failed:
        return after, summary
    head = job.on_event(Event.NODE_WEIGHTS_REMOVED, after=after, **summary)
    if removed.failed:
        raise PublishJobError(
            f"node cleanup: the artifact is published, but {sorted(removed.failed)} could not be removed "
            f"from {job.workspace.job_dir(job.job_id)}: {removed.failed}; fix the cause and run published_artifact "
            "again (it re-verifies the registry copy and retries the cleanup)"
        )
    return head, summary
