"""Signing a job's release record, and verifying a signature with a named reason.

A signature is an Ed25519 signature over the canonical JSON of its manifestation (`SignedManifestation`): the release
record (job, lot, exam report and verdict, artifact files) plus the meaning, the reason, the signer's key id and printed
name and the UTC time. It counts when the key is trusted, the signature verifies, the key was valid at that time for
that meaning, and the release record it names is the job's current one.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from foundry_assets.audit_events import Event, Record, ReleaseSigned, SignedManifestation
from foundry_assets.errors import SigningError
from foundry_assets.release.keys import key_id
from foundry_assets.release.record import ReleaseRecord, canonical_json
from foundry_assets.release.signers import TrustedSigner, TrustedSigners

ALGORITHM = "Ed25519"


class Refusal(StrEnum):
    """Why a signature does not count: each reason `verify_signature` returns starts with one of these."""

    MALFORMED = "malformed"
    UNKNOWN_SIGNER = "unknown signer"
    FORGED = "forged"
    WRONG_NAME = "wrong name"
    KEY_NOT_YET_VALID = "key not yet valid"
    KEY_EXPIRED = "key expired"
    MEANING_NOT_ALLOWED = "meaning not allowed"
    NO_RELEASE = "no release"
    WRONG_JOB = "wrong job"
    WRONG_LOT = "wrong lot"
    WRONG_ARTIFACT = "wrong artifact"
    WRONG_EXAM = "wrong exam"


def check_reason(reason: str) -> str:
    """The reason, stripped; an empty one is refused (EU Annex 11 §9: who, what, when and why)."""
    if not reason.strip():
        raise SigningError("--reason is empty: say why you sign (it is recorded with the signature)")
    return reason.strip()


def sign_release(
    release: ReleaseRecord,
    key: Ed25519PrivateKey,
    signer: TrustedSigner,
    *,
    meaning: str,
    reason: str,
    at: datetime | None = None,
) -> ReleaseSigned:
    """The `release_signed` payload: the manifestation and its signature. Refuses (SigningError) what verification
    would refuse: a key that is not `signer`'s, a key outside its period, a meaning the signer may not sign."""
    reason = check_reason(reason)
    if key_id(key.public_key()) != signer.key_id:
        raise SigningError(f"the key is not {signer.printed_name}'s (key_id {signer.key_id[:12]}…)")
    at = (at or datetime.now(UTC)).astimezone(UTC)
    if problem := signer.problem(meaning, at):
        raise SigningError(problem)
    manifestation = SignedManifestation(
        job_id=release.job_id,
        lot_number=release.lot_number,
        exam_report_sha256=release.exam_report_sha256,
        exam_verdict_sha256=release.exam_verdict_sha256,
        artifact=release.artifact,
        files=dict(release.files),
        meaning=meaning,
        key_id=signer.key_id,
        printed_name=signer.printed_name,
        signed_at=at.isoformat(timespec="seconds"),
        reason=reason,
    )
    signature = base64.b64encode(key.sign(canonical_json(manifestation))).decode("ascii")
    return ReleaseSigned(manifestation=manifestation, signature=signature, algorithm=ALGORITHM)


def _signed_at(value: Any) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo is not None else None


def verify_signature(
    record_data: dict[str, Any], *, trusted: TrustedSigners, current_release: ReleaseRecord | None
) -> str | None:
    """None when the signature in a `release_signed` record's data counts for `current_release`; else the reason,
    starting with its `Refusal` name. `current_release` None: the job has nothing releasable now."""
    m, signature = record_data.get("manifestation"), record_data.get("signature")
    if not isinstance(m, dict) or not isinstance(signature, str):
        return f"{Refusal.MALFORMED}: the record holds no manifestation and signature"
    signer = trusted.get(str(m.get("key_id")))
    if signer is None:
        return f"{Refusal.UNKNOWN_SIGNER}: key {str(m.get('key_id'))[:12]}… ({m.get('printed_name')!r}) is not in the trusted-signers file"
    try:
        signer.verifier().verify(base64.b64decode(signature, validate=True), canonical_json(m))
    except (InvalidSignature, binascii.Error, ValueError):
        return f"{Refusal.FORGED}: the signature does not verify with {signer.printed_name}'s key {signer.key_id[:12]}…: the record or its signature was altered"
    if m.get("printed_name") != signer.printed_name:
        return f"{Refusal.WRONG_NAME}: signed as {m.get('printed_name')!r}, the trusted-signers file names the key's owner {signer.printed_name!r}"
    at = _signed_at(m.get("signed_at"))
    if at is None:
        return f"{Refusal.MALFORMED}: signed_at {m.get('signed_at')!r} is not a UTC time"
    if problem := signer.problem(str(m.get("meaning")), at):
        return problem
    if current_release is None:
        return f"{Refusal.NO_RELEASE}: the job's current lot has no passed exam, so lot {str(m.get('lot_number'))[:12]}… is not releasable"
    return _release_mismatch(m, current_release)


def _release_mismatch(m: dict[str, Any], current: ReleaseRecord) -> str | None:
    """The first field of the signed release record that is not the current one's, as its named reason."""
    if m.get("job_id") != current.job_id:
        return f"{Refusal.WRONG_JOB}: signed for job {m.get('job_id')!r}, not {current.job_id!r}"
    if m.get("lot_number") != current.lot_number:
        return f"{Refusal.WRONG_LOT}: signed lot {str(m.get('lot_number'))[:12]}…, the job's current lot is {current.lot_number[:12]}…"
    if m.get("artifact") != current.artifact or m.get("files") != current.files:
        return f"{Refusal.WRONG_ARTIFACT}: the signed {m.get('artifact')} files are not the {current.artifact} files the job would publish now"
    if (m.get("exam_report_sha256"), m.get("exam_verdict_sha256")) != (
        current.exam_report_sha256,
        current.exam_verdict_sha256,
    ):
        return f"{Refusal.WRONG_EXAM}: signed exam report {str(m.get('exam_report_sha256'))[:12]}… is not the current exam's {current.exam_report_sha256[:12]}…"
    return None


@dataclass(frozen=True)
class Approval:
    """One `release_signed` record and whether it counts (`reason` None) or why not."""

    record: Record
    reason: str | None

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def manifestation(self) -> dict[str, Any]:
        return dict(self.record["data"].get("manifestation") or {})


def approvals(
    records: list[Record],
    trusted: TrustedSigners,
    meaning: str | None = None,
    *,
    current_release: ReleaseRecord | None,
) -> list[Approval]:
    """Every signature in the trail (of `meaning`, when given), oldest first, each verified against the current
    release: what the release gate counts and what `foundry signatures` lists."""
    found = []
    for record in records:
        if record.get("event") != Event.RELEASE_SIGNED:
            continue
        data = record.get("data") or {}
        if meaning is None or (data.get("manifestation") or {}).get("meaning") == meaning:
            found.append(
                Approval(record, verify_signature(data, trusted=trusted, current_release=current_release))
            )
    return found
