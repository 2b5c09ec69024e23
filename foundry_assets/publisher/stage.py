"""The Distribute stage's entry point: `publish_job` publishes one job's examined artifact by the foundry's rules, with
no Dagster in it.

The rules, in order: a failed exam is never published (the blocking check stops the step within one run; this holds
the gate across runs too), and the exam and the model must come from one lot. Publishing is idempotent and crash-safe:
a lot already published under the tag is re-verified from the registry and nothing new is recorded; a push that a
crash cut off after its `publish_started` record is completed from the registry and recorded once. Otherwise the
gate is re-derived from the audit trail (`publisher.gate`: a passed verdict of this lot that examined these weights),
the artifact (`artifact: auto`: the merged model for DoRA and merge jobs) is staged and its weights re-hashed
against the hashes recorded when they were saved, the intent is recorded, and the push uploads, verifies and then
records `published` before staging is removed. Once published, the job's weights leave the node (only its records
stay). The deployment notice (`announce`) is the caller's last step, after it has reported the artifact, so a failed
notice never hides a verified publish.

Every decision goes to the audit trail through `on_event` (the caller's audit writer, which returns the trail's new
head); registries and the webhook are reached through `Registry` (the Dagster layer passes its `PublisherResource`).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event, OnEvent, Record, latest
from foundry_assets.errors import FoundryError, PublishError
from foundry_assets.fsio import exclusive_lock
from foundry_assets.manifest import PublishTarget, TrainingManifest
from foundry_assets.publisher.base import PublishResult
from foundry_assets.publisher.card import lot_from_trail
from foundry_assets.publisher.gate import (
    ReleaseRefused,
    artifact_kind,
    check_staged,
    published_record,
    release_from_trail,
    same_target,
    staged_hashes,
)
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
    # one publish of a job at a time (two runs of one partition, a retry beside a re-execution): the second reads
    # the trail after the first has recorded, and finds the lot published
    with exclusive_lock(workspace.lock_path(manifest.job_id, "publish")):
        try:
            records = trail.records()
        except FoundryError as e:
            raise PublishJobError(f"publish: the job's audit trail: {e}") from e
        job = _Job(manifest, workspace, registry, on_event, records, exam.lot_number)
        return _publish_and_clean(job, exam, merged, log)


def _publish_and_clean(
    job: _Job, exam: ExamResult, merged: MergedModel, log: logging.Logger
) -> PublishJobResult:
    kind, result, published, head = _publish(job, exam, merged)
    log.info(f"Published {kind} of job {job.job_id} to {result.uri} ({result.status})")
    head, removed = _remove_weights(job, after=published, head=head)
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


def _publish(job: _Job, exam: ExamResult, merged: MergedModel) -> tuple[str, PublishResult, str, str]:
    """Publish once: a lot already published under the tag is re-verified and left alone (no new record); a push a
    crash cut off after its `publish_started` record is completed from the registry; otherwise the trail's gate is
    checked, the artifact staged and re-hashed, the intent recorded, and the push made.
    Returns (artifact kind, the registry's answer, the `published` record's hash, the trail's head)."""
    target = job.target
    done = _already_published(job, exam, merged)
    if done is not None:
        return done
    recovered = _complete_interrupted(job)
    if recovered is not None:
        return recovered
    kind = artifact_kind(job.manifest)
    heads: list[str] = []

    def record(result: PublishResult) -> None:  # after verification, before staging is removed
        heads.append(_record_published(job, result, kind))

    staging = _stage_checked(job, exam, merged, kind)
    try:
        result = job.registry.push(staging, target.tag, registry=target.registry, on_verified=record)
    except FoundryError as e:
        job.on_event(Event.PUBLISH_FAILED, registry=target.registry, tag=target.tag, reason=str(e))
        raise PublishJobError(f"publish: {e}") from e
    return kind, result, heads[-1], heads[-1]


def _already_published(
    job: _Job, exam: ExamResult, merged: MergedModel
) -> tuple[str, PublishResult, str, str] | None:
    """This lot's `published` record under this tag, when the registry copy still verifies: the publish is done, and
    this run (which may have rebuilt the weights: training is not bit-reproducible) publishes nothing new."""
    earlier = published_record(job.records, job.target, job.lot)
    if earlier is None:
        return None
    data = earlier["data"]
    try:
        result = job.registry.verify(job.target.registry, job.target.tag, dict(data.get("files") or {}))
    except FoundryError as e:
        lost = f"lot {job.lot[:12]}… was published to {data.get('uri')} (audit record #{earlier['seq']}), but that copy no longer verifies: {e}"
        kind = artifact_kind(job.manifest)
        source = merged.model_dir if kind == "merged_model" else merged.adapter_dir
        if source is None or not Path(source).is_dir():  # nothing on the node to publish in its place
            job.on_event(Event.PUBLISH_FAILED, registry=job.target.registry, tag=job.target.tag, reason=lost)
            raise PublishJobError(
                f"publish: {lost}. Restore the tag from a copy, or run the job again to rebuild and re-examine it"
            ) from e
        logger.warning(f"{lost}; publishing this run's examined artifact in its place")
        return None
    logger.info(
        f"lot {job.lot[:12]}… of job {job.job_id} is already published to {result.uri} (audit record "
        f"#{earlier['seq']}) and that copy verifies: nothing new is published"
    )
    kind = str(data.get("artifact") or artifact_kind(job.manifest))
    return kind, result, earlier["sha256"], job.records[-1]["sha256"]


def _complete_interrupted(job: _Job) -> tuple[str, PublishResult, str, str] | None:
    """A `publish_started` of this lot and tag with no `published` after it: a run died during its push. When the
    registry holds exactly the files it was pushing, the publish is recorded now (once); otherwise None (push again)."""
    started = [
        r
        for r in job.records
        if r.get("event") == Event.PUBLISH_STARTED and same_target(r, job.target, job.lot)
    ]
    if not started or published_record(job.records, job.target, job.lot):
        return None
    intent = started[-1]
    files, kind = dict(intent["data"].get("files") or {}), str(intent["data"].get("artifact"))
    try:
        result = job.registry.verify(job.target.registry, job.target.tag, files)
    except FoundryError as e:
        logger.info(
            f"the push of publish_started record #{intent['seq']} did not complete ({e}); pushing again"
        )
        return None
    head = _record_published(job, result, kind, recovered_from=intent["seq"])
    logger.warning(
        f"completed the publish interrupted after audit record #{intent['seq']}: {result.uri} holds exactly the "
        "files it was pushing, now recorded as published"
    )
    return kind, result, head, head


def _stage_checked(job: _Job, exam: ExamResult, merged: MergedModel, kind: str) -> Path:
    """The gate as the trail proves it, the artifact staged, its weights re-hashed against the saved record, and the
    intent (`publish_started`, with every staged file's hash) recorded before anything leaves the node."""
    try:
        release = release_from_trail(job.records, lot=job.lot, kind=kind)
        staging = _stage(job, exam, merged, kind)
        staged = staged_hashes(staging)
        check_staged(staged, kind=kind, release=release)
    except ReleaseRefused as e:
        job.on_event(Event.PUBLISH_REFUSED, reasons=[str(e)])
        raise PublishJobError(f"publish refused: {e}") from e
    job.on_event(
        Event.PUBLISH_STARTED,
        uri=job.target.registry,
        tag=job.target.tag,
        registry=job.target.registry,
        artifact=kind,
        files=staged,
        lot_number=job.lot,
    )
    return staging


def _stage(job: _Job, exam: ExamResult, merged: MergedModel, kind: str) -> Path:
    """Stage the artifact, replacing any leftover; missing weights are recorded as a failed publish, with why."""
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
        lot=lot_from_trail(job.records, job.lot),
        trained=(latest(job.records, Event.ADAPTER_SAVED) or {}).get("data"),
    )


def _record_published(job: _Job, result: PublishResult, kind: str, **recovered: int) -> str:
    return job.on_event(
        Event.PUBLISHED,
        **recovered,
        uri=result.uri,
        tag=result.tag,
        registry=job.target.registry,
        status=result.status,
        artifact=kind,
        artifact_sha256=result.artifact_sha256,
        files=result.files,
        lot_number=job.lot,
    )


def _remove_weights(job: _Job, *, after: str, head: str) -> tuple[str, dict[str, Any]]:
    """Remove the job's weight folders after the verified publish recorded as `after`; record what was freed.
    Returns (the trail's head, summary); `head` is the head before, kept when nothing was left to remove."""
    removed = job.workspace.remove_weights(job.job_id)
    summary = removed.to_metadata()
    if not removed.folders and not removed.failed:
        return head, summary
    head = job.on_event(Event.NODE_WEIGHTS_REMOVED, after=after, **summary)
    if removed.failed:
        raise PublishJobError(
            f"node cleanup: the artifact is published, but {sorted(removed.failed)} could not be removed "
            f"from {job.workspace.job_dir(job.job_id)}: {removed.failed}; fix the cause and run published_artifact "
            "again (it re-verifies the registry copy and retries the cleanup)"
        )
    return head, summary
