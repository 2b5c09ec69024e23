"""The job's release record: what a signature signs, derived the way the publish derives what it ships.

The lot is the job's latest `job_accepted` lot; the exam is the trail's latest passed `exam_verdict` of that lot and
the report file the examiner wrote beside it; the artifact is the manifest's kind (`publisher.gate.artifact_kind`)
and the weight files `publisher.gate.release_from_trail` proves (the `merged` or `adapter_saved` record's files). A
signature copied to another lot, exam or artifact therefore no longer matches the release it is checked against.
"""

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event, Record, latest
from foundry_assets.publisher.gate import ReleaseRefused, artifact_kind, release_from_trail
from foundry_assets.workspace import Workspace


def canonical_json(value: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys and no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class ReleaseRecord:
    """One job's releasable state: its lot, the exam that passed it, and the artifact's weight files."""

    job_id: str
    lot_number: str
    exam_report_sha256: str
    exam_verdict_sha256: str
    artifact: str
    files: dict[str, str]


def current_release(workspace: Workspace, job_id: str, records: list[Record] | None = None) -> ReleaseRecord:
    """The job's release record now; ReleaseRefused when its current lot has no passed exam (or the trail or the
    exam report disagree), ManifestError for a job that was never registered, AuditError for a broken trail."""
    manifest = workspace.load(job_id)
    if records is None:
        records = AuditTrail(workspace.audit_path(job_id)).records()
    accepted = latest(records, Event.JOB_ACCEPTED)
    if accepted is None:
        raise ReleaseRefused(f"job {job_id} has no {Event.JOB_ACCEPTED} record: nothing to release")
    lot = str(accepted["data"].get("lot_number"))
    kind = artifact_kind(manifest)
    release = release_from_trail(records, lot=lot, kind=kind)
    report = _exam_report_sha256(workspace, job_id, release.verdict)
    return ReleaseRecord(job_id, lot, report, str(release.verdict["sha256"]), kind, release.expected)


def _exam_report_sha256(workspace: Workspace, job_id: str, verdict: Record) -> str:
    """SHA256 of the exam report file, once its verdict, lot and model digest are those the trail recorded."""
    path = workspace.exam_report_path(job_id)
    try:
        data = path.read_bytes()
        document = json.loads(data)
    except (OSError, ValueError) as e:
        raise ReleaseRefused(f"the exam report {path} cannot be read ({e}); run the exam again") from None
    recorded = verdict["data"]
    expected = {
        **(recorded.get("report") or {}),
        "lot_number": recorded.get("lot_number"),
        "model_sha256": recorded.get("model_sha256"),
    }
    differing = sorted(
        k for k, v in expected.items() if not isinstance(document, dict) or document.get(k) != v
    )
    if differing:
        raise ReleaseRefused(
            f"the exam report {path} does not match exam verdict #{verdict['seq']} in the trail ({', '.join(differing)} "
            "differ): it was changed after the exam; run the exam again"
        )
    return hashlib.sha256(data).hexdigest()
