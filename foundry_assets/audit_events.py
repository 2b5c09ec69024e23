"""The audit trail's vocabulary: every event a stage writes and what its record holds, shared by writers and readers.

Writers (the stage assets) append `Event` members; readers (the merge's source checks, the publish guard, the auditor's
report) look them up with `latest`/`after` here, never with string literals of their own. Each read-back payload has a
TypedDict naming its fields.
"""

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Protocol, TypedDict


class Event(StrEnum):
    """Every audit event, in the order a job writes them."""

    JOB_ACCEPTED = "job_accepted"
    DATA_CURATED = "data_curated"
    PREFLIGHT_PASSED = "preflight_passed"
    PREFLIGHT_FAILED = "preflight_failed"
    TRAINING_STARTED = "training_started"
    TRAINING_RESUMED = "training_resumed"
    TRAINING_LOSS = "training_loss"
    TRAINING_SKIPPED = "training_skipped"
    """Written instead of ADAPTER_SAVED by a merge-only job (`merge.include_own_adapter: false`)."""
    ADAPTER_SAVED = "adapter_saved"
    MERGE_REFUSED = "merge_refused"
    MERGED = "merged"
    EXAM_VERDICT = "exam_verdict"
    RELEASE_SIGNED = "release_signed"
    """An electronic signature of the job's release record (21 CFR 11.50/11.70), written by `foundry sign` at any
    time after a passed exam (`ReleaseSigned`)."""
    RELEASE_PENDING = "release_pending"
    """The exam passed but `release.require_approval` is not met yet: nothing was published (the release sensor
    starts the publish once the approvals count)."""
    RELEASE_REJECTED = "release_rejected"
    """A valid `reject` signature of the current release: the job publishes nothing."""
    PUBLISH_REFUSED = "publish_refused"
    PUBLISH_FAILED = "publish_failed"
    PUBLISH_STARTED = "publish_started"
    """The gate passed and the staged files were hashed; the push follows (the intent a crashed publish resumes)."""
    PUBLISHED = "published"
    NODE_WEIGHTS_REMOVED = "node_weights_removed"
    """Written after the weight folders are removed; its `after` is the `published` record it follows."""
    DEPLOYMENT_NOTIFIED = "deployment_notified"
    DEPLOYMENT_NOTICE_FAILED = "deployment_notice_failed"
    TRAIL_REPAIRED = "trail_repaired"
    """Written by the trail itself, at any point, before the next record when its last line was torn (a write cut off,
    e.g. by a full disk): the torn bytes were moved to the sidecar file it names and the line was cut off, never joined
    to a record (`TrailRepaired`)."""


class OnEvent(Protocol):
    """How a stage's entry point writes its audit records without knowing Dagster: append one record (`event` with
    `data`) to the job's trail, as the run's actor, and return the trail's new head hash (the asset passes
    `JobContext.audit`). A `reason` here is the stage's own (why a step was refused) and stays in `data`."""

    def __call__(self, event: Event, **data: Any) -> str: ...


STAGE_EVENTS: dict[str, Event] = {
    "raw_data": Event.JOB_ACCEPTED,
    "curated_dataset": Event.DATA_CURATED,
    "trained_adapter": Event.ADAPTER_SAVED,
    "merged_model": Event.MERGED,
    "exam_report": Event.EXAM_VERDICT,
    "published_artifact": Event.PUBLISHED,
}
"""Each asset, in lineage order, and the audit event its `audit_head` metadata points at."""


class JobAccepted(TypedDict, total=False):
    manifest: dict[str, Any]
    source_data: str
    lines: int
    lot_number: str
    dataset_sha256: str
    manifest_sha256: str
    environment: dict[str, Any]
    """`intake.fingerprint.EnvironmentFingerprint.to_dict()`: where the lot was accepted (not in the lot number)."""


class TrainingLoss(TypedDict):
    step: int
    loss: float


class AdapterSaved(TypedDict, total=False):
    adapter_dir: str
    files: dict[str, str]
    backend: str
    device: str


class Merged(TypedDict, total=False):
    method: str
    sources: list[dict[str, Any]]
    source_jobs: list[dict[str, Any]]
    include_own_adapter: bool
    files: dict[str, str]


class ExamVerdict(TypedDict, total=False):
    passed: bool
    reasons: list[str]
    metrics: list[dict[str, Any]]
    report: dict[str, Any]
    lot_number: str
    model_sha256: str
    """Tree digest of the model folder the exam loaded (`hashing.tree_digest`): the publish gate's link to `merged`."""
    champion: dict[str, Any] | None
    """The current release the candidate also had to beat (`ExamResult.champion`); None: the base model only."""
    sources: list[dict[str, Any]]
    """The merge source jobs scored beside the candidate (`ExamResult.sources`); empty: not a merge of source jobs."""
    source_retention: float | None
    """The share of the best source's gated rates the candidate had to keep; None without sources."""


class SignedManifestation(TypedDict):
    """What a signer signs: the job's release record (lot, exam, artifact files), the signature's meaning and reason,
    and who signed when. The Ed25519 signature covers its canonical JSON, so copying it to another lot, exam or
    artifact, or editing any field, makes it fail verification (`release.signature.verify_signature`)."""

    job_id: str
    lot_number: str
    exam_report_sha256: str
    """SHA256 of the exam report file the examiner wrote (`Workspace.exam_report_path`)."""
    exam_verdict_sha256: str
    """The `sha256` of the trail's `exam_verdict` record that passed: the signature's link into the hash chain."""
    artifact: str
    """"adapter" or "merged_model" (`publisher.gate.artifact_kind`)."""
    files: dict[str, str]
    """The artifact's weight files and their SHA256, as the publish gate derives them from the trail."""
    meaning: str
    """review, approve-release or reject."""
    key_id: str
    """SHA256 of the signer's raw Ed25519 public key."""
    printed_name: str
    signed_at: str
    """UTC, ISO 8601."""
    reason: str


class ReleaseSigned(TypedDict):
    manifestation: SignedManifestation
    signature: str
    """Base64 of the Ed25519 signature over the manifestation's canonical JSON (sorted keys, no whitespace)."""
    algorithm: str


class PublishStarted(TypedDict, total=False):
    """Written before the push, after the gate: a crash before `published` is completed from it by the next run."""

    uri: str
    tag: str
    registry: str
    artifact: str
    files: dict[str, str]
    lot_number: str


class Published(TypedDict, total=False):
    uri: str
    tag: str
    registry: str
    status: str
    artifact: str
    artifact_sha256: str
    files: dict[str, str]
    lot_number: str
    recovered_from: int
    """Set when a crashed publish was completed: the `publish_started` record whose push reached the registry."""


class WeightsRemoved(TypedDict, total=False):
    after: str
    folders: dict[str, int]
    bytes_freed: int
    failed: dict[str, str]


class TrailRepaired(TypedDict):
    torn_bytes: int
    torn_sha256: str
    sidecar: str
    """The evidence file's name, beside the trail: `<trail>.torn-<seq>-<sha256[:12]>`."""


Record = dict[str, Any]
"""An audit record as `AuditTrail.records()` returns it: seq, ts, job_id, event, actor (`actor.Actor.to_dict()`; absent
in records written before actors were recorded), reason (a person's why, when given), data, prev/sha256."""


def latest(records: Iterable[Record], event: Event, *, before: int | None = None) -> Record | None:
    """The last record of `event` (only those with seq below `before`, when given)."""
    found = None
    for record in records:
        if record.get("event") == event and (before is None or record["seq"] < before):
            found = record
    return found


def after(records: Iterable[Record], event: Event, seq: int) -> list[Record]:
    """Every record of `event` written after record `seq`, oldest first."""
    return [r for r in records if r.get("event") == event and r["seq"] > seq]
