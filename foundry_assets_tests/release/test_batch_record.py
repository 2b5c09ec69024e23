"""The batch record (`foundry audit report JOB --html`) lists every electronic signature with its printed name, UTC
time, meaning, reason and verification: a valid approval reads verified, a forged one is a problem of the chain, and a
signature of an untrusted key says so."""

import base64
from pathlib import Path

from foundry_assets.audit_checks import Section
from foundry_assets.audit_events import Event, Record
from foundry_assets.audit_report import AuditReport, SignatureCheck, build_report
from foundry_assets.release.keys import NewKey
from foundry_assets.release.record import current_release
from foundry_assets.release.signature import verify_signature
from foundry_assets_tests.publisher.jobs import JOB, Job
from foundry_assets_tests.release.conftest import entry, trusted
from foundry_assets_tests.release.test_signing import _sign

TITLE = "Electronic signatures"


def _signatures(job: Job, check: SignatureCheck | None = None) -> tuple[AuditReport, Section]:
    """The job's report (no event log: the trail alone) and its signatures section."""
    report = build_report(
        JOB,
        manifest=job.manifest,
        trail_path=job.workspace.audit_path(JOB),
        materializations={},
        checks={},
        check_signature=check,
    )
    [section] = [s for s in report.sections if s.title.startswith(TITLE)]
    return report, section


def test_the_batch_record_lists_each_signature_verified_or_why_not(
    job: Job, jane: NewKey, mallory: NewKey
) -> None:
    signers = trusted(entry(jane))
    approval = _sign(job, jane, signers)
    forged = {**approval, "signature": base64.b64encode(b"\0" * 64).decode()}
    job.trail.append(Event.RELEASE_SIGNED, job_id=JOB, **forged)
    _sign(job, mallory, trusted(entry(mallory)))  # a key the QA file does not trust

    release = current_release(job.workspace, JOB)

    def check(record: Record) -> str | None:
        return verify_signature(record["data"], trusted=signers, current_release=release)

    report, section = _signatures(job, check)
    valid, fake, untrusted = section.items
    assert valid.status == "ok" and valid.note.endswith("verified")
    assert valid.trail.startswith("Jane Roe · ") and " UTC · lot " in valid.trail
    assert "approve-release" in valid.label and "why: exam reviewed, release approved" in valid.note
    assert fake.status == "MISMATCH" and "does not count: forged" in fake.note
    assert untrusted.status == "MISMATCH" and "unknown signer" in untrusted.note
    assert any("forged" in problem for problem in report.problems)

    html = report.to_html()
    assert TITLE in html and "Jane Roe" in html and "Mallory Moe" in html and "verified" in html


def test_without_a_trusted_signers_file_each_signature_says_it_was_not_verified(
    job: Job, jane: NewKey, tmp_path: Path
) -> None:
    _sign(job, jane, trusted(entry(jane)))
    _report, section = _signatures(job)
    [item] = section.items
    assert item.status == "info" and "not verified" in item.note
