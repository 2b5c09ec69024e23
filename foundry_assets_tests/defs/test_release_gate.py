"""The QA release gate on a real Dagster instance (`release.require_approval`): a job whose exam passed publishes
nothing until a trusted signer approves its current release; the release sensor then requests the publish, which goes
through; an untrusted or forged signature never counts; a `reject` ends the job; the gate holds in any later run."""

import base64
from pathlib import Path

import dagster as dg
import pytest
import yaml

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.definitions import FOUNDRY_ASSETS, build_definitions, build_resources
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.demo.stories import logic_records, story_corpus, story_manifest, write_drop
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.release.keys import NewKey, generate_key
from foundry_assets.release.record import current_release
from foundry_assets.release.signature import sign_release
from foundry_assets.release.signers import load_trusted_signers
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.release.conftest import PASSPHRASE, entry
from foundry_assets_tests.release.test_signing import _key

pytestmark = pytest.mark.slow


@pytest.fixture()
def jane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NewKey:
    """Jane's key, the only one in the trusted-signers file QA keeps."""
    key = generate_key("Jane Roe", PASSPHRASE)
    path = tmp_path / "trusted.yaml"
    path.write_text(yaml.safe_dump({"signers": [entry(key)]}))
    monkeypatch.setenv("FOUNDRY_TRUSTED_SIGNERS", str(path))
    return key


def _job(root: Path, job_id: str) -> Path:
    model_dir = build_tiny_llama(root / "models" / "tiny-llama-story", corpus=story_corpus())
    manifest = story_manifest(
        job_id,
        model_dir,
        root / "registry",
        method_config={"type": "lora", "max_steps": 5},
        exam={"gate": ["heldout_loss"], "min_loss_improvement": 0.0},
        release={"require_approval": True},
    )
    return write_drop(root, job_id, logic_records(count=60), manifest)


def _sign(workspace: Workspace, job_id: str, key: NewKey, meaning: str) -> None:
    """`foundry sign JOB --meaning MEANING` with `key`, its signer taken from a trusted file (`key`'s own entry
    when QA does not trust it: a signature that verifies but is not trusted)."""
    signers = load_trusted_signers()
    signer = signers.get(key.key_id)
    if signer is None:
        signer = type(signers).model_validate({"signers": [entry(key)]}).signers[0]
    payload = sign_release(
        current_release(workspace, job_id), _key(key), signer, meaning=meaning, reason=f"QA {meaning}"
    )
    AuditTrail(workspace.audit_path(job_id)).append(Event.RELEASE_SIGNED, job_id=job_id, **payload)


def _tick(instance: dg.DagsterInstance, defs: dg.Definitions) -> list[dg.RunRequest]:
    with dg.build_sensor_context(
        instance=instance, definitions=defs, resources=dict(defs.resources or {})
    ) as context:
        result = defs.resolve_sensor_def("release_sensor")(context)
    assert isinstance(result, dg.SensorResult)
    return list(result.run_requests or [])


def _publish(instance: dg.DagsterInstance, job_id: str) -> dg.ExecuteInProcessResult:
    """The run the sensor requests: `published_artifact` alone, for the job's partition."""
    return dg.materialize(
        FOUNDRY_ASSETS,
        selection=[published_artifact],
        partition_key=job_id,
        instance=instance,
        resources=build_resources(),
        raise_on_error=False,
    )


def _events(workspace: Workspace, job_id: str) -> list[str]:
    return [r["event"] for r in AuditTrail(workspace.audit_path(job_id)).records()]


def test_nothing_is_published_until_a_trusted_approval_then_the_sensor_publishes(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance, jane: NewKey
) -> None:
    job_id, tag = "gxp-approve", demo_root / "registry" / "v0.1.0-gxp-approve"
    outcome = run_manifest(_job(demo_root, job_id), instance=instance, workspace=workspace)
    assert outcome.success and outcome.published is None, outcome.reason
    assert "awaits approval" in outcome.reason
    assert _events(workspace, job_id)[-1] == Event.RELEASE_PENDING and not tag.exists()
    defs = build_definitions()
    assert _tick(instance, defs) == []

    # a forged approval and one by a key QA does not trust never count, in the sensor or in a later run
    _sign(workspace, job_id, generate_key("Mallory Moe", PASSPHRASE), "approve-release")
    trail = AuditTrail(workspace.audit_path(job_id))
    signed = [r for r in trail.records() if r["event"] == Event.RELEASE_SIGNED][-1]["data"]
    trail.append(
        Event.RELEASE_SIGNED, job_id=job_id, **{**signed, "signature": base64.b64encode(b"\0" * 64).decode()}
    )
    assert _tick(instance, defs) == []
    later = _publish(instance, job_id)
    assert later.success and not later.asset_materializations_for_node("published_artifact")
    pending = [r for r in trail.records() if r["event"] == Event.RELEASE_PENDING][-1]["data"]
    assert pending["state"] == "pending" and pending["signatures"] == []
    assert {n["reason"].split(":")[0] for n in pending["not_counted"]} == {"unknown signer"}
    assert not tag.exists()

    _sign(workspace, job_id, jane, "approve-release")
    [request] = _tick(instance, defs)
    assert request.partition_key == job_id
    assert request.asset_selection == [dg.AssetKey("published_artifact")]
    published = _publish(instance, job_id)
    assert published.success and published.asset_materializations_for_node("published_artifact")
    assert tag.is_dir() and Event.PUBLISHED in _events(workspace, job_id)
    assert _tick(instance, defs) == []  # published: nothing more to start


def test_a_rejection_ends_the_job_and_nothing_is_published(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance, jane: NewKey
) -> None:
    job_id, tag = "gxp-reject", demo_root / "registry" / "v0.1.0-gxp-reject"
    assert run_manifest(_job(demo_root, job_id), instance=instance, workspace=workspace).success
    _sign(workspace, job_id, jane, "reject")
    assert _tick(instance, build_definitions()) == []
    result = _publish(instance, job_id)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "rejected by Jane Roe" in failure.step_failure_data.user_failure_data.description
    assert _events(workspace, job_id)[-1] == Event.RELEASE_REJECTED and not tag.exists()
