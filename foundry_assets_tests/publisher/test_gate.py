"""The release a run of an already-published lot finds: its `published` record, and only while the copy verifies."""

from pathlib import Path
from typing import Any

from foundry_assets.audit_events import Event
from foundry_assets.manifest import PublishTarget
from foundry_assets.publisher import push_artifact
from foundry_assets.publisher.fetch import verify_artifact
from foundry_assets.publisher.gate import already_published, verified_release

LOT = "a" * 64


def _published(tmp_path: Path) -> tuple[PublishTarget, list[dict[str, Any]]]:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "adapter_model.safetensors").write_bytes(b"weights")
    registry = str(tmp_path / "registry")
    result = push_artifact(staging, "v1", registry=registry)
    data = {"tag": "v1", "registry": registry, "lot_number": LOT, "files": result.files, "uri": result.uri}
    records = [
        {"seq": 0, "event": Event.JOB_ACCEPTED, "data": {"lot_number": LOT}},
        {"seq": 1, "event": Event.PUBLISHED, "data": {**data, "artifact": "adapter"}},
    ]
    return PublishTarget(registry=registry, tag="v1"), records


def test_a_verified_release_of_the_lot_is_found_and_named(tmp_path: Path) -> None:
    target, records = _published(tmp_path)
    release = verified_release(records, target, LOT, verify_artifact)
    assert release is records[1]
    message = already_published("job-a", release, LOT)
    assert "audit record #1" in message and "nothing to run" in message and "publish_target.tag" in message
    assert message.splitlines()[-1] == f"lot number: {LOT}"


def test_another_lot_or_tag_is_not_a_release_of_this_one(tmp_path: Path) -> None:
    target, records = _published(tmp_path)
    assert verified_release(records, target, "b" * 64, verify_artifact) is None
    other_tag = PublishTarget(registry=target.registry, tag="v2")
    assert verified_release(records, other_tag, LOT, verify_artifact) is None


def test_a_release_whose_copy_changed_or_went_is_not_found(tmp_path: Path) -> None:
    """Then a run trains and publishes again (or its publish says what differs): nothing is skipped on a bad copy."""
    target, records = _published(tmp_path)
    weights = Path(target.registry) / "v1" / "adapter_model.safetensors"
    weights.write_bytes(b"rotten!")
    assert verified_release(records, target, LOT, verify_artifact) is None
    weights.unlink()
    assert verified_release(records, target, LOT, verify_artifact) is None
