"""The artifact layout (weights, manifest, exam report, card), the handoff steps, publish_target validation."""

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from foundry_assets.errors import ManifestError, PublishError
from foundry_assets.intake.lot import LotNumber
from foundry_assets.manifest import REGISTRY_SCHEMES, PublishTarget, parse_manifest
from foundry_assets.publisher import (
    PublishResult,
    PublishStepError,
    layout,
    push_artifact,
    registered_schemes,
)
from foundry_assets.publisher.base import PUBLISHER_FILES, weights_of
from foundry_assets.publisher.layout import stage_artifact

MANIFEST: dict[str, Any] = {
    "job_id": "train-prod-2025-01-15",
    "base_model": "unsloth/llama-3-8b-bnb-4bit",
    "method_config": {"type": "orpo", "rank": 64, "alpha": None, "learning_rate": 0.0002, "max_steps": 60},
    "publish_target": {"registry": "s3://coreason-models/prod", "tag": "v2.1.0-safety"},
    "merge": {"sources": [{"adapter": "/a"}]},
}
EXAM: dict[str, Any] = {
    "passed": True,
    "reasons": [],
    "items_scored": 42,
    "lot_number": "ab" * 32,
    "metrics": [
        {
            "name": "heldout_loss",
            "baseline": 2.345678,
            "candidate": 1.5,
            "required": "< baseline",
            "passed": True,
        }
    ],
    "contamination": {"fraction": 0.0, "max_allowed": 0.0, "test_items": 42, "ngram_n": 13},
}
LOT = LotNumber(dataset_sha256="cd" * 32, manifest_sha256="ef" * 32, lot_number="ab" * 32)


def test_stage_artifact_lays_out_weights_manifest_report_and_card(tmp_path: Path) -> None:
    source = tmp_path / "adapter-out"
    source.mkdir()
    (source / "adapter_model.safetensors").write_bytes(b"w")
    staging = stage_artifact(
        source,
        tmp_path / "staging",
        kind="adapter",
        manifest_dict=MANIFEST,
        exam_report_dict={**EXAM, "report_path": "/x"},
        lot=LOT,
    )
    names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    assert names == ["README.md", "adapter_model.safetensors", "exam_report.json", "manifest.yaml"]
    assert "report_path" not in (staging / "exam_report.json").read_text()


@pytest.mark.parametrize("name", sorted(PUBLISHER_FILES))
def test_a_weights_folder_holding_a_publisher_file_is_refused(tmp_path: Path, name: str) -> None:
    """The weights sit at the tag's root beside the publisher's files: a weights folder holding one of them would
    ship one of the two under that name, so staging refuses it and names the file."""
    source = tmp_path / "merged-out"
    source.mkdir()
    (source / "model.safetensors").write_bytes(b"w")
    (source / name).write_text("written by a library")
    with pytest.raises(PublishError, match=rf"merged_model folder .* holds \['{re.escape(name)}'\]"):
        stage_artifact(
            source,
            tmp_path / "staging",
            kind="merged_model",
            manifest_dict=MANIFEST,
            exam_report_dict=EXAM,
            lot=LOT,
        )
    assert not (tmp_path / "staging").exists() and (source / name).read_text() == "written by a library"


def test_the_weights_of_a_listing_are_its_root_or_its_legacy_folder() -> None:
    """Publisher files aside, the root holds the weights; a tag with none at its root (published before the root
    layout) holds them in `adapter/` or `merged_model/`."""
    ours = dict.fromkeys(["README.md", "manifest.yaml", "exam_report.json", "MANIFEST.sha256"], "0" * 64)
    root = {**ours, "config.json": "1" * 64, "model.safetensors": "2" * 64}
    assert weights_of(root) == ("", {"config.json": "1" * 64, "model.safetensors": "2" * 64})
    legacy = {**ours, "adapter/adapter_config.json": "3" * 64, "adapter/README.md": "4" * 64}
    assert weights_of(legacy) == ("adapter/", {"adapter_config.json": "3" * 64, "README.md": "4" * 64})
    merged = {**ours, "merged_model/model.safetensors": "5" * 64}
    assert weights_of(merged) == ("merged_model/", {"model.safetensors": "5" * 64})
    assert weights_of(ours) == ("", {})


def test_the_published_manifest_never_holds_a_credential(tmp_path: Path) -> None:
    """A validated manifest holds no credential in its registry or webhook (they are refused); a URL credential in a
    field that is not checked for one (here base_model) is redacted in every published file, card included."""
    source = tmp_path / "adapter-out"
    source.mkdir()
    (source / "adapter_model.safetensors").write_bytes(b"w")
    staging = stage_artifact(
        source,
        tmp_path / "staging",
        kind="adapter",
        manifest_dict={**MANIFEST, "base_model": "https://ghp_Zq8sEkr1t@models.example/org/base"},
        exam_report_dict=EXAM,
        lot=LOT,
    )
    published = yaml.safe_load((staging / "manifest.yaml").read_text())
    assert published["base_model"] == "https://***@models.example/org/base"
    assert not [p for p in staging.rglob("*") if p.is_file() and b"Zq8sEkr1t" in p.read_bytes()]


def test_a_hand_made_manifest_with_a_credential_is_refused_at_staging(tmp_path: Path) -> None:
    """The card is made from the validated manifest, so a dict the foundry would refuse is never published; the
    refusal does not echo the token."""
    source = tmp_path / "adapter-out"
    source.mkdir()
    (source / "adapter_model.safetensors").write_bytes(b"w")
    target = {
        "registry": "git+https://ghp_Zq8sEkr1t@host/org/models.git",
        "tag": "v1",
        "webhook_url": "https://deploy.example/hooks?env=prod&token=Zq8sEkr1t",
    }
    with pytest.raises(PublishError, match=r"publish_target.registry: registry holds a credential") as info:
        stage_artifact(
            source,
            tmp_path / "staging",
            kind="adapter",
            manifest_dict={**MANIFEST, "publish_target": target},
            exam_report_dict=EXAM,
            lot=LOT,
        )
    assert "Zq8sEkr1t" not in str(info.value)


@pytest.mark.faults
def test_staging_on_a_full_disk_fails_in_one_short_line_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "adapter-out"
    source.mkdir()
    for shard in range(40):
        (source / f"model-{shard:05d}-of-00040.safetensors").write_bytes(b"w")

    def full_disk(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr(layout, "_link_or_copy", full_disk)
    with pytest.raises(PublishError) as info:
        stage_artifact(
            source,
            tmp_path / "staging",
            kind="adapter",
            manifest_dict=MANIFEST,
            exam_report_dict=EXAM,
            lot=LOT,
        )
    message = str(info.value)
    assert "No space left on device" in message and "(and 39 more files)" in message
    assert len(message) < 600 and not (tmp_path / "staging").exists()


def test_on_verified_runs_before_staging_is_removed_and_a_failure_keeps_it(
    tmp_path: Path, staged: Callable[..., Path]
) -> None:
    seen: list[tuple[PublishResult, bool]] = []
    staging = staged()
    result = push_artifact(
        staging,
        "v1",
        registry=str(tmp_path / "reg"),
        on_verified=lambda r: seen.append((r, staging.exists())),
    )
    assert seen and seen[0][1] and not seen[0][0].staging_removed and result.staging_removed

    def broken_audit(_: PublishResult) -> None:
        raise OSError("audit disk full")

    staging = staged(name="again")
    with pytest.raises(PublishStepError, match=r"'record' failed: .*audit disk full") as info:
        push_artifact(staging, "v1", registry=str(tmp_path / "reg"), on_verified=broken_audit)
    assert info.value.step == "record" and staging.exists()
    assert push_artifact(staging, "v1", registry=str(tmp_path / "reg")).status == "unchanged"


def test_manifest_schemes_match_the_registered_backends() -> None:
    assert sorted(REGISTRY_SCHEMES) == list(registered_schemes())


@pytest.mark.parametrize(
    "registry",
    [
        "git+file:///srv/models.git",
        "git+ssh://git@github.com/org/models.git",
        "git+https://host/org/m.git#releases",
    ],
)
def test_git_registries_are_accepted(registry: str) -> None:
    assert PublishTarget(registry=registry, tag="v1").registry == registry


def _doc(**target: Any) -> dict[str, Any]:
    return {
        "job_id": "j1",
        "base_model": "m",
        "method_config": {"type": "dora"},
        "publish_target": {"registry": "s3://b/p", "tag": "v1", **target},
    }


@pytest.mark.parametrize(
    ("target", "field", "hint"),
    [
        (
            {"trigger_deployment": True},
            "publish_target.webhook_url",
            "required when trigger_deployment is true",
        ),
        ({"webhook_url": "ftp://x/y"}, "publish_target.webhook_url", "not an http:// or https:// URL"),
        ({"webhook_url": "https://u:p@x/y"}, "publish_target.webhook_url", "holds a credential"),
        ({"registry": "git+https://host"}, "publish_target.registry", "names no repository"),
        ({"registry": "git+https://u:tok@host/r.git"}, "publish_target.registry", "a password"),
    ],
)
def test_bad_publish_targets_name_the_field(target: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(_doc(**target))
    assert f"  {field}: " in str(info.value) and hint in str(info.value)


def test_triggered_deployment_with_a_webhook_is_accepted() -> None:
    manifest = parse_manifest(
        _doc(trigger_deployment=True, webhook_url="https://deploy.example/hooks/models")
    )
    assert manifest.publish_target.webhook_url == "https://deploy.example/hooks/models"
