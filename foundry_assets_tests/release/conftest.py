"""A job whose trail holds what the stages record (`publisher/jobs.py`), examined the way the examiner leaves it (the
verdict in the trail, the report file beside it), and signing keys with their trusted-signers entries."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.fsio import write_json
from foundry_assets.release.keys import NewKey, generate_key
from foundry_assets.release.signers import TrustedSigner, TrustedSigners
from foundry_assets_tests.publisher.jobs import LOT, Job

PASSPHRASE = "correct horse battery"
NOW = datetime.now(UTC)


def new_job(folder: Path, **options: Any) -> Job:
    """A job's trail and weights (`Job`), its manifest registered as intake registers it."""
    job = Job(folder, **options)
    job.workspace.register(job.manifest)
    return job


def examined(job: Job, *, passed: bool = True, lot: str = LOT) -> None:
    """Record an exam verdict and write its report file, as `examiner.stage.examine_job` does."""
    result = job.exam(passed=passed, lot=lot)
    write_json(result.report_path, result.document(), indent=2, sort_keys=True)


def entry(key: NewKey, **changes: Any) -> dict[str, Any]:
    """The key's trusted-signers entry: valid from a day ago for a year, every meaning (unless `changes` say)."""
    return {
        "key_id": key.key_id,
        "printed_name": key.printed_name,
        "public_key": key.public_key,
        "valid_from": NOW - timedelta(days=1),
        "expires": NOW + timedelta(days=365),
        "meanings": ["review", "approve-release", "reject"],
        **changes,
    }


def trusted(*entries: dict[str, Any]) -> TrustedSigners:
    return TrustedSigners(signers=[TrustedSigner.model_validate(e) for e in entries])


@pytest.fixture(scope="session")
def jane() -> NewKey:
    return generate_key("Jane Roe", PASSPHRASE)


@pytest.fixture(scope="session")
def mallory() -> NewKey:
    return generate_key("Mallory Moe", PASSPHRASE)


@pytest.fixture()
def job(tmp_path: Path) -> Job:
    """A LoRA job (its artifact: the adapter) with a passed exam of its lot."""
    job = new_job(tmp_path)
    examined(job)
    return job
