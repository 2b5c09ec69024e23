"""Fetching a published tag back from every registry backend: hash-checked, placed whole or not at all."""

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher import (
    FetchStepError,
    PublishStepError,
    fetch_artifact,
    push_artifact,
    verify_artifact,
)

WEIGHTS = "adapter_model.safetensors"


@dataclass
class Registry:
    """A registry under test: its URI, the S3 client it needs (if any), and a way to damage one published file."""

    uri: str
    s3_client: Any
    damage: Callable[[str, str, bytes], None]


def _local(tmp_path: Path) -> Registry:
    root = tmp_path / "registry"

    def damage(tag: str, name: str, content: bytes) -> None:
        (root / tag / name).write_bytes(content)

    return Registry(str(root), None, damage)


def _s3(s3_client: Any, bucket: str) -> Registry:
    def damage(
        tag: str, name: str, content: bytes
    ) -> None:  # an object overwritten behind the foundry's back
        s3_client.put_object(Bucket=bucket, Key=f"prod/{tag}/{name}", Body=content)

    return Registry(f"s3://{bucket}/prod", s3_client, damage)


def _git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    if shutil.which("git-lfs") is None:
        pytest.skip("needs git-lfs (Debian package git-lfs)")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (tmp_path / "empty-gitconfig").write_text("")
    bare = tmp_path / "models.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)

    def damage(tag: str, name: str, content: bytes) -> None:  # the LFS object's bytes rot on the server
        pointer = subprocess.run(
            ["git", "--git-dir", str(bare), "cat-file", "-p", f"{tag}:{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        oid = next(line.split(":", 1)[1] for line in pointer.splitlines() if line.startswith("oid "))
        (bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).write_bytes(content)

    return Registry(bare.as_uri().replace("file:", "git+file:", 1), None, damage)


@pytest.fixture(params=["local", "s3", "git"])
def registry(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    if request.param == "local":
        return _local(tmp_path)
    if request.param == "s3":
        return _s3(request.getfixturevalue("s3_client"), request.getfixturevalue("bucket"))
    return _git(tmp_path, monkeypatch)


def _publish(registry: Registry, staged: Callable[..., Path], tag: str = "v1") -> dict[str, str]:
    return push_artifact(
        staged(b"adapter weights " * 64), tag, registry=registry.uri, s3_client=registry.s3_client
    ).files


def test_fetch_returns_exactly_the_published_files(
    registry: Registry, staged: Callable[..., Path], tmp_path: Path
) -> None:
    published = _publish(registry, staged)
    whole = fetch_artifact(registry.uri, "v1", tmp_path / "whole", s3_client=registry.s3_client)
    assert sha256_tree(whole.path) == published == whole.files
    assert whole.listing == published and whole.subfolder == ""

    adapter = fetch_artifact(
        registry.uri,
        "v1",
        tmp_path / "adapter",
        weights=True,
        expected=published,
        s3_client=registry.s3_client,
    )
    weights = {name: digest for name, digest in published.items() if name != "exam_report.json"}
    assert sha256_tree(tmp_path / "adapter") == adapter.files == weights and adapter.subfolder == ""
    assert set(adapter.files) == {"adapter_model.safetensors", "adapter_config.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder is left behind"

    again = fetch_artifact(
        registry.uri, "v1", tmp_path / "adapter", weights=True, s3_client=registry.s3_client
    )
    assert again.files == adapter.files, "a second fetch replaces the folder with the same content"
    result = verify_artifact(registry.uri, "v1", published, s3_client=registry.s3_client)
    assert result.status == "unchanged" and result.files == published


def test_the_weights_of_a_tag_published_before_the_root_layout_are_its_adapter_folder(
    registry: Registry, staged: Callable[..., Path], tmp_path: Path
) -> None:
    """Tags published by earlier versions hold the weights in `adapter/`: they are still fetched as weights."""
    published = push_artifact(
        staged(b"old weights", folder="adapter"), "v0", registry=registry.uri, s3_client=registry.s3_client
    ).files
    assert "adapter/adapter_model.safetensors" in published
    fetched = fetch_artifact(
        registry.uri, "v0", tmp_path / "old", weights=True, expected=published, s3_client=registry.s3_client
    )
    assert fetched.subfolder == "adapter"
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (tmp_path / "old" / "adapter_model.safetensors").read_bytes() == b"old weights"


def test_a_file_damaged_in_the_registry_is_refused_by_name(
    registry: Registry, staged: Callable[..., Path], tmp_path: Path
) -> None:
    published = _publish(registry, staged)
    registry.damage("v1", WEIGHTS, b"rotten bytes")
    dest = tmp_path / "adapter"
    dest.mkdir()
    (dest / "kept.txt").write_text("an earlier fetch")
    with pytest.raises(FetchStepError, match=r"adapter_model\.safetensors") as info:
        fetch_artifact(registry.uri, "v1", dest, weights=True, s3_client=registry.s3_client)
    assert info.value.step in ("download", "verify")
    assert sha256_tree(dest) == {"kept.txt": sha256_tree(dest)["kept.txt"]}, (
        "the old folder is left as it was"
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter")]
    with pytest.raises(PublishStepError, match=r"adapter_model\.safetensors"):
        verify_artifact(registry.uri, "v1", published, s3_client=registry.s3_client)


def test_a_missing_tag_or_folder_fails_clearly(
    registry: Registry, staged: Callable[..., Path], tmp_path: Path
) -> None:
    with pytest.raises(FetchStepError, match=r"tag 'v9' does not exist") as info:
        fetch_artifact(registry.uri, "v9", tmp_path / "x", s3_client=registry.s3_client)
    assert info.value.step == "listing" and not (tmp_path / "x").exists()
    published = _publish(registry, staged)
    with pytest.raises(FetchStepError, match=r"holds no 'merged_model/' folder \(it holds: files only\)"):
        fetch_artifact(
            registry.uri, "v1", tmp_path / "x", subfolder="merged_model", s3_client=registry.s3_client
        )
    (tmp_path / "cards-only").mkdir()
    (tmp_path / "cards-only" / "README.md").write_text("a card, no weights")
    push_artifact(tmp_path / "cards-only", "v2", registry=registry.uri, s3_client=registry.s3_client)
    with pytest.raises(FetchStepError, match=r"holds no weights \(only the publisher's files\)"):
        fetch_artifact(registry.uri, "v2", tmp_path / "x", weights=True, s3_client=registry.s3_client)
    with pytest.raises(PublishStepError, match="no longer exists"):
        verify_artifact(registry.uri, "v9", published, s3_client=registry.s3_client)


def test_a_listing_that_differs_from_the_record_is_refused_before_download(
    staged: Callable[..., Path], tmp_path: Path
) -> None:
    registry = str(tmp_path / "registry")
    published = push_artifact(staged(), "v1", registry=registry).files
    recorded = {**published, WEIGHTS: "0" * 64}
    with pytest.raises(FetchStepError, match=r"does not hold what was published.*adapter_model.safetensors"):
        fetch_artifact(registry, "v1", tmp_path / "adapter", weights=True, expected=recorded)
    assert not (tmp_path / "adapter").exists()
