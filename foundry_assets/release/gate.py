"""The QA release gate (`release.require_approval`): may the job's current release be published?

Decided from the trail alone, every time it is asked (in the publish step, by the release sensor, in any later run):
the valid signatures of the current release (`signature.approvals`: trusted key, in its period, of this lot, exam and
artifact) are counted by distinct key. A valid `reject` ends the job; `release.signers` distinct valid approvals of
`release.meaning` release it; anything less keeps it pending. A signature of another lot, exam or artifact, a forged
one or one by an untrusted key never counts. No Dagster here.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from foundry_assets.audit_events import Event, Record, after, latest
from foundry_assets.errors import FoundryError
from foundry_assets.manifest import TrainingManifest
from foundry_assets.release.record import current_release
from foundry_assets.release.signature import Approval, approvals
from foundry_assets.release.signers import load_trusted_signers
from foundry_assets.workspace import Workspace

State = Literal["approved", "pending", "rejected"]


@dataclass(frozen=True)
class ReleaseDecision:
    """What the gate decided, and on which signatures (their trail `seq`s and printed names)."""

    state: State
    detail: str
    lot_number: str
    counted: list[Approval] = field(default_factory=list)
    refused: list[Approval] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The `release_pending` / `release_rejected` payload (and the publish metadata of an approved release)."""
        return {
            "state": self.state,
            "lot_number": self.lot_number,
            "detail": self.detail,
            "signatures": [_brief(a) for a in self.counted],
            "not_counted": [{**_brief(a), "reason": a.reason} for a in self.refused],
        }

    @property
    def run_key(self) -> str:
        """One publish run per set of approvals of a lot (the release sensor's run key)."""
        return f"release-{self.lot_number[:16]}-" + "-".join(str(a.record.get("seq")) for a in self.counted)


def _brief(approval: Approval) -> dict[str, Any]:
    m = approval.manifestation
    return {
        "seq": approval.record.get("seq"),
        "printed_name": m.get("printed_name"),
        "meaning": m.get("meaning"),
    }


def release_decision(
    manifest: TrainingManifest, workspace: Workspace, records: list[Record]
) -> ReleaseDecision:
    """The gate's decision for the job's current release. Raises FoundryError (ReleaseRefused) when the current lot
    has no passed exam: the publish gate refuses that on its own terms."""
    release = current_release(workspace, manifest.job_id, records)
    config = manifest.release
    try:
        trusted = load_trusted_signers()
    except FoundryError as e:
        return ReleaseDecision("pending", f"no signature can be verified: {e}", release.lot_number)
    found = approvals(records, trusted, current_release=release)
    refused = [a for a in found if not a.valid]
    valid = [a for a in found if a.valid]
    rejections = [a for a in valid if a.manifestation.get("meaning") == "reject"]
    if rejections:
        m = rejections[-1].manifestation
        detail = f"rejected by {m.get('printed_name')} at {m.get('signed_at')}: {m.get('reason')}"
        return ReleaseDecision("rejected", detail, release.lot_number, rejections, refused)
    by_key: dict[str, Approval] = {}
    for approval in valid:
        if approval.manifestation.get("meaning") == config.meaning:
            by_key.setdefault(str(approval.manifestation.get("key_id")), approval)
    counted = list(by_key.values())
    if len(counted) >= config.signers:
        names = ", ".join(str(a.manifestation.get("printed_name")) for a in counted)
        return ReleaseDecision(
            "approved", f"approved ({config.meaning}) by {names}", release.lot_number, counted, refused
        )
    detail = (
        f"{len(counted)} of {config.signers} distinct valid {config.meaning!r} signature(s) of lot "
        f"{release.lot_number[:12]}…; a trusted signer runs `foundry sign {manifest.job_id} --meaning "
        f"{config.meaning} --reason …`, then the release sensor publishes"
    )
    return ReleaseDecision("pending", detail, release.lot_number, counted, refused)


def awaiting_release(workspace: Workspace, job_ids: list[str]) -> list[tuple[str, ReleaseDecision]]:
    """The jobs whose publish waits for approval (a `release_pending` with no `published` or `release_rejected`
    after it) and whose current release is now approved: what the release sensor starts a publish run for."""
    from foundry_assets.audit import AuditTrail

    ready = []
    for job_id in job_ids:
        path = workspace.audit_path(job_id)
        if not path.is_file():
            continue
        try:
            records = AuditTrail(path).records()
            pending = latest(records, Event.RELEASE_PENDING)
            if pending is None or after(records, Event.PUBLISHED, pending["seq"]):
                continue
            if after(records, Event.RELEASE_REJECTED, pending["seq"]):
                continue
            manifest = workspace.load(job_id)
            if not manifest.release.require_approval:
                continue
            decision = release_decision(manifest, workspace, records)
        except FoundryError:  # a job that cannot be read or released now: nothing to start
            continue
        if decision.state == "approved":
            ready.append((job_id, decision))
    return ready
