"""`foundry keygen`, `foundry sign`, `foundry signatures` on a job's workspace: the printed entry is trusted as
printed, a signature lands in the trail and is listed verified, refusals are one line and exit 2, and neither the
private key nor the passphrase ever reaches the trail or the output."""

import base64
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from foundry_assets.audit_events import Event
from foundry_assets.cli import main
from foundry_assets.release.keys import load_private_key
from foundry_assets_tests.publisher.jobs import JOB, Job
from foundry_assets_tests.release.conftest import PASSPHRASE, examined, new_job


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FOUNDRY_HOME at the job's workspace, the passphrase from the environment, the trusted file beside it."""
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "foundry"))
    monkeypatch.setenv("FOUNDRY_SIGNING_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("FOUNDRY_TRUSTED_SIGNERS", str(tmp_path / "trusted.yaml"))
    return tmp_path


def _keygen(env: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Make Jane's key and trust the entry `foundry keygen` printed; returns the key file."""
    assert main(["keygen", "--name", "Jane Roe", "--out", str(env / "keys")]) == 0
    out = capsys.readouterr().out
    (env / "trusted.yaml").write_text(yaml.safe_dump({"signers": yaml.safe_load(out)}))
    [key] = (env / "keys").iterdir()
    return key


def _sign(key: Path, *extra: str) -> int:
    return main(
        ["sign", JOB, "--meaning", "approve-release", "--reason", "QA release", "--key", str(key), *extra]
    )


def test_keygen_sign_and_signatures(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = new_job(env)
    examined(job)
    key = _keygen(env, capsys)
    assert key.stat().st_mode & 0o777 == 0o600
    assert _sign(key) == 0
    signed = capsys.readouterr().out
    assert "approve-release by Jane Roe at" in signed and " UTC" in signed
    [record] = [r for r in job.trail.records() if r["event"] == Event.RELEASE_SIGNED]
    m = record["data"]["manifestation"]
    assert (m["printed_name"], m["meaning"], m["reason"]) == ("Jane Roe", "approve-release", "QA release")
    # who and why, in what the hash chain covers: the signer, and the reason they gave
    assert record["actor"] == {"kind": "user", "name": "Jane Roe"} and record["reason"] == "QA release"
    assert main(["signatures", JOB]) == 0
    listed = capsys.readouterr().out
    assert (
        f"#{record['seq']}" in listed
        and "Jane Roe  approve-release" in listed
        and listed.rstrip().endswith("verified")
    )
    assert " UTC" in listed


def test_signatures_exits_1_naming_a_signature_that_fails(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = new_job(env)
    examined(job)
    assert _sign(_keygen(env, capsys)) == 0
    examined(job)  # examined again after the signature: it no longer covers the current exam
    capsys.readouterr()
    assert main(["signatures", JOB]) == 1
    assert "FAILS: wrong exam:" in capsys.readouterr().out


def test_sign_refusals_exit_2_with_one_line(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = new_job(env)
    key = _keygen(env, capsys)
    assert _sign(key) == 2
    assert "holds no exam verdict of lot" in capsys.readouterr().err
    examined(job, passed=False)
    assert _sign(key) == 2
    assert "failed" in capsys.readouterr().err
    examined(job)
    assert main(["sign", JOB, "--meaning", "review", "--reason", "  ", "--key", str(key)]) == 2
    assert "--reason is empty" in capsys.readouterr().err
    monkeypatch.setenv("FOUNDRY_SIGNING_PASSPHRASE", "not the passphrase")
    assert _sign(key) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong passphrase" in err
    assert not [r for r in job.trail.records() if r["event"] == Event.RELEASE_SIGNED]


def test_keygen_refuses_a_weak_or_mistyped_passphrase(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOUNDRY_SIGNING_PASSPHRASE", "")
    assert main(["keygen", "--name", "Jane Roe", "--out", str(env / "keys")]) == 2
    assert "passphrase of at least 8" in capsys.readouterr().err
    monkeypatch.delenv("FOUNDRY_SIGNING_PASSPHRASE")
    typed = iter([PASSPHRASE, PASSPHRASE + "!"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert main(["keygen", "--name", "Jane Roe", "--out", str(env / "keys")]) == 2
    assert "the two passphrases differ" in capsys.readouterr().err
    assert not (env / "keys").exists()


def test_the_private_key_and_passphrase_never_reach_the_trail_or_output(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job: Job = new_job(env)
    examined(job)
    assert main(["keygen", "--name", "Jane Roe", "--out", str(env / "keys")]) == 0
    made = capsys.readouterr()
    (env / "trusted.yaml").write_text(yaml.safe_dump({"signers": yaml.safe_load(made.out)}))
    [key] = (env / "keys").iterdir()
    assert _sign(key) == 0 and main(["signatures", JOB]) == 0
    shown = capsys.readouterr()
    private = load_private_key(key, PASSPHRASE)
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    secrets = [raw.hex(), base64.b64encode(raw).decode(), key.read_text().splitlines()[1], PASSPHRASE]
    trail = job.workspace.audit_path(JOB).read_text()
    for text in (trail, made.out, made.err, shown.out, shown.err):
        assert not [s for s in secrets if s in text]
