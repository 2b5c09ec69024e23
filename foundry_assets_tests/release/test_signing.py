"""Electronic signatures: a job's release signed and verified, and each way a signature must not count refused with
its named reason (forged, untrusted, expired, meaning not allowed, copied to another lot, artifact, exam or job)."""

import base64
import dataclasses
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from foundry_assets.audit_events import Event, ReleaseSigned
from foundry_assets.errors import SigningError
from foundry_assets.hashing import sha256_file, sha256_tree
from foundry_assets.publisher.gate import ReleaseRefused
from foundry_assets.release.keys import NewKey, generate_key, key_id, load_private_key, write_private_key
from foundry_assets.release.record import ReleaseRecord, canonical_json, current_release
from foundry_assets.release.signature import Refusal, approvals, sign_release, verify_signature
from foundry_assets.release.signers import TrustedSigners, load_trusted_signers
from foundry_assets_tests.publisher.jobs import JOB, LOT, Job
from foundry_assets_tests.release.conftest import NOW, PASSPHRASE, entry, examined, new_job, trusted


def _key(new: NewKey) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(new.private_pem, PASSPHRASE.encode())
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _sign(job: Job, new: NewKey, signers: TrustedSigners, meaning: str = "approve-release") -> ReleaseSigned:
    """Sign the job's current release with `new` and append the record to its trail, as `foundry sign` does."""
    release = current_release(job.workspace, JOB)
    signer = signers.get(new.key_id)
    assert signer is not None
    payload = sign_release(
        release, _key(new), signer, meaning=meaning, reason="exam reviewed, release approved"
    )
    job.trail.append(Event.RELEASE_SIGNED, job_id=JOB, **payload)
    return payload


def _verify(job: Job, data: ReleaseSigned | dict, signers: TrustedSigners) -> str | None:
    return verify_signature(dict(data), trusted=signers, current_release=current_release(job.workspace, JOB))


@pytest.mark.parametrize(
    ("method", "artifact", "saved"), [("lora", "adapter", "adapter"), ("dora", "merged_model", "merged")]
)
def test_a_jobs_release_is_signed_and_verified(
    tmp_path: Path, jane: NewKey, method: str, artifact: str, saved: str
) -> None:
    job = new_job(tmp_path, method=method)
    examined(job)
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    m = payload["manifestation"]
    folder = job.workspace.adapter_dir(JOB) if saved == "adapter" else job.workspace.merged_dir(JOB)
    verdict = [r for r in job.trail.records() if r["event"] == Event.EXAM_VERDICT][-1]
    assert (m["job_id"], m["lot_number"], m["artifact"], m["files"]) == (
        JOB,
        LOT,
        artifact,
        sha256_tree(folder),
    )
    assert m["exam_report_sha256"] == sha256_file(job.workspace.exam_report_path(JOB))
    assert m["exam_verdict_sha256"] == verdict["sha256"]
    assert (m["printed_name"], m["key_id"], m["meaning"]) == ("Jane Roe", jane.key_id, "approve-release")
    assert m["signed_at"].endswith("+00:00") and abs(NOW - NOW.fromisoformat(m["signed_at"])) < timedelta(
        hours=1
    )
    _key(jane).public_key().verify(base64.b64decode(payload["signature"]), canonical_json(m))
    assert _verify(job, payload, signers) is None
    found = approvals(
        job.trail.records(), signers, "approve-release", current_release=current_release(job.workspace, JOB)
    )
    assert [(a.valid, a.manifestation["printed_name"]) for a in found] == [(True, "Jane Roe")]
    assert approvals(job.trail.records(), signers, "reject", current_release=None) == []


def test_a_forged_signature_is_refused(job: Job, jane: NewKey) -> None:
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    raw = bytearray(base64.b64decode(payload["signature"]))
    raw[10] ^= 0x01
    flipped = {**payload, "signature": base64.b64encode(bytes(raw)).decode()}
    assert str(_verify(job, flipped, signers)).startswith(f"{Refusal.FORGED}:")
    edited = {**payload, "manifestation": {**payload["manifestation"], "reason": "edited afterwards"}}
    assert str(_verify(job, edited, signers)).startswith(f"{Refusal.FORGED}:")


def test_an_untrusted_key_is_an_unknown_signer(job: Job, jane: NewKey, mallory: NewKey) -> None:
    payload = _sign(job, mallory, trusted(entry(mallory)))
    reason = _verify(job, payload, trusted(entry(jane)))
    assert str(reason).startswith(f"{Refusal.UNKNOWN_SIGNER}:") and "Mallory Moe" in str(reason)


def test_a_key_outside_its_period_is_refused(job: Job, jane: NewKey) -> None:
    payload = _sign(job, jane, trusted(entry(jane)))
    expired = trusted(entry(jane, expires=NOW - timedelta(hours=1)))
    assert str(_verify(job, payload, expired)).startswith(f"{Refusal.KEY_EXPIRED}:")
    later = trusted(entry(jane, valid_from=NOW + timedelta(hours=1)))
    assert str(_verify(job, payload, later)).startswith(f"{Refusal.KEY_NOT_YET_VALID}:")
    with pytest.raises(SigningError, match="key expired"):
        _sign(job, jane, expired)


def test_a_meaning_the_signer_may_not_sign_is_refused(job: Job, jane: NewKey) -> None:
    payload = _sign(job, jane, trusted(entry(jane)))
    reviewer = trusted(entry(jane, meanings=["review"]))
    assert str(_verify(job, payload, reviewer)).startswith(f"{Refusal.MEANING_NOT_ALLOWED}:")
    with pytest.raises(SigningError, match="meaning not allowed"):
        _sign(job, jane, reviewer, meaning="approve-release")
    assert _verify(job, _sign(job, jane, reviewer, meaning="review"), reviewer) is None


def test_a_signature_copied_to_another_lots_trail_is_refused(tmp_path: Path, job: Job, jane: NewKey) -> None:
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    other = new_job(tmp_path / "other")
    other.audit(Event.JOB_ACCEPTED, lot_number="4" * 64, dataset_sha256="5" * 64, manifest_sha256="3" * 64)
    examined(other, lot="4" * 64)
    other.trail.append(Event.RELEASE_SIGNED, job_id=JOB, **payload)
    [copied] = approvals(
        other.trail.records(), signers, current_release=current_release(other.workspace, JOB)
    )
    assert str(copied.reason).startswith(f"{Refusal.WRONG_LOT}:")


def test_a_signature_of_other_weights_is_refused(job: Job, jane: NewKey) -> None:
    """The adapter was saved again (other bytes) and examined again: the old signature names other files."""
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    (job.workspace.adapter_dir(JOB) / "adapter_model.safetensors").write_bytes(b"retrained weights")
    job.audit(Event.ADAPTER_SAVED, files=sha256_tree(job.workspace.adapter_dir(JOB)))
    job.audit(Event.MERGED, files=sha256_tree(job.workspace.merged_dir(JOB)))
    examined(job)
    assert str(_verify(job, payload, signers)).startswith(f"{Refusal.WRONG_ARTIFACT}:")


def test_a_signature_of_an_earlier_exam_or_another_job_is_refused(job: Job, jane: NewKey) -> None:
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    examined(job)  # the same weights examined again: a new verdict the signer has not seen
    assert str(_verify(job, payload, signers)).startswith(f"{Refusal.WRONG_EXAM}:")
    elsewhere = dataclasses.replace(current_release(job.workspace, JOB), job_id="job-q")
    reason = verify_signature(dict(payload), trusted=signers, current_release=elsewhere)
    assert str(reason).startswith(f"{Refusal.WRONG_JOB}:")


def test_a_failed_exam_leaves_nothing_to_sign_and_voids_earlier_signatures(job: Job, jane: NewKey) -> None:
    signers = trusted(entry(jane))
    payload = _sign(job, jane, signers)
    examined(job, passed=False)
    with pytest.raises(ReleaseRefused, match="failed"):
        current_release(job.workspace, JOB)
    reason = verify_signature(dict(payload), trusted=signers, current_release=None)
    assert str(reason).startswith(f"{Refusal.NO_RELEASE}:")


def test_an_exam_report_edited_after_the_exam_is_not_signed(job: Job) -> None:
    path = job.workspace.exam_report_path(JOB)
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, "model_sha256": "6" * 64}))
    with pytest.raises(ReleaseRefused, match="does not match exam verdict"):
        current_release(job.workspace, JOB)


def test_a_key_is_usable_only_with_its_passphrase(tmp_path: Path, jane: NewKey) -> None:
    path = write_private_key(tmp_path, jane)
    assert path.stat().st_mode & 0o777 == 0o600 and b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert key_id(load_private_key(path, PASSPHRASE).public_key()) == jane.key_id
    with pytest.raises(SigningError, match="wrong passphrase"):
        load_private_key(path, "not the passphrase")
    with pytest.raises(SigningError, match="no passphrase"):
        load_private_key(path, "")
    with pytest.raises(SigningError, match="never overwritten"):
        write_private_key(tmp_path, jane)
    plain = tmp_path / "plain.pem"
    plain.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningError, match="not protected by a passphrase"):
        load_private_key(plain, PASSPHRASE)
    for weak in ("", "short"):
        with pytest.raises(SigningError, match="passphrase of at least 8"):
            generate_key("Jane Roe", weak)


def test_the_trusted_signers_file_names_each_bad_field(tmp_path: Path, jane: NewKey, mallory: NewKey) -> None:
    path = tmp_path / "trusted_signers.yaml"
    good = entry(jane)
    path.write_text(yaml.safe_dump({"signers": [good]}))
    assert load_trusted_signers(path).get(jane.key_id) is not None
    bad = [
        {**good, "key_id": mallory.key_id},
        {**entry(mallory), "expires": "2027-01-01T00:00:00", "meanings": ["publish"]},
    ]
    path.write_text(yaml.safe_dump({"signers": bad}))
    with pytest.raises(SigningError) as raised:
        load_trusted_signers(path)
    message = str(raised.value)
    assert str(path) in message and "3 problem(s)" in message
    assert "signers.0: key_id does not match public_key" in message
    assert "signers.1.expires:" in message and "signers.1.meanings.0:" in message
    with pytest.raises(SigningError, match="no trusted-signers file"):
        load_trusted_signers(tmp_path / "missing.yaml")


def test_a_release_record_is_what_the_publish_gate_ships(job: Job) -> None:
    release = current_release(job.workspace, JOB)
    assert release == ReleaseRecord(
        JOB,
        LOT,
        sha256_file(job.workspace.exam_report_path(JOB)),
        [r for r in job.trail.records() if r["event"] == Event.EXAM_VERDICT][-1]["sha256"],
        "adapter",
        sha256_tree(job.workspace.adapter_dir(JOB)),
    )
    shutil.rmtree(
        job.workspace.adapter_dir(JOB)
    )  # removed after a publish: the trail still proves the release
    assert current_release(job.workspace, JOB) == release
