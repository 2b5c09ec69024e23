import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foundry_assets.errors import PublishError
from foundry_assets.publisher import push_artifact
from foundry_assets.publisher.base import HASH_MANIFEST, parse_hash_manifest


def _stage(root: Path, content: bytes = b"weights") -> Path:
    staging = root / "staging"
    staging.mkdir(parents=True)
    (staging / "adapter_model.safetensors").write_bytes(content)
    (staging / "adapter_config.json").write_text("{}")
    (staging / "exam_report.json").write_text('{"passed": true}')
    return staging


def test_publish_copies_verifies_and_removes_staging(tmp_path: Path) -> None:
    staging = _stage(tmp_path)
    result = push_artifact(staging, "v1.0.0", registry=str(tmp_path / "registry"))
    assert result.status == "published" and result.staging_removed
    assert not staging.exists()
    published = tmp_path / "registry" / "v1.0.0"
    assert result.uri == published.as_uri()
    listing = parse_hash_manifest((published / HASH_MANIFEST).read_text())
    assert set(listing) == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "exam_report.json",
    }
    for name, digest in listing.items():
        assert hashlib.sha256((published / name).read_bytes()).hexdigest() == digest
    assert not [p for p in (tmp_path / "registry").iterdir() if p.name.startswith(".")]


def test_file_uri_registry(tmp_path: Path) -> None:
    result = push_artifact(_stage(tmp_path), "v1", registry=(tmp_path / "reg").as_uri())
    assert (tmp_path / "reg" / "v1" / HASH_MANIFEST).exists() and result.status == "published"


def test_same_content_is_a_noop_and_different_content_is_refused(tmp_path: Path) -> None:
    registry = str(tmp_path / "registry")
    push_artifact(_stage(tmp_path), "v1", registry=registry)
    again = push_artifact(_stage(tmp_path), "v1", registry=registry)
    assert again.status == "unchanged" and not (tmp_path / "staging").exists()
    staging = _stage(tmp_path, b"other weights")
    with pytest.raises(PublishError, match=r"already exists .* different content"):
        push_artifact(staging, "v1", registry=registry)
    assert staging.exists(), "a refused publish keeps the staging copy"
    assert (tmp_path / "registry" / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"


def test_failed_verification_keeps_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from foundry_assets.publisher.local import LocalRegistry

    def corrupting_upload(self: LocalRegistry, staging: Path, tag: str, files: dict[str, str]) -> None:
        shutil.copytree(staging, self.root / tag)
        (self.root / tag / "exam_report.json").write_text('{"passed": false}')

    monkeypatch.setattr(LocalRegistry, "upload", corrupting_upload)
    staging = _stage(tmp_path)
    with pytest.raises(PublishError, match=r"verification .* failed for \['exam_report.json'\]"):
        push_artifact(staging, "v1", registry=str(tmp_path / "registry"))
    assert staging.exists()


def test_missing_or_empty_staging_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        push_artifact(tmp_path / "nope", "v1", registry=str(tmp_path / "r"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="empty"):
        push_artifact(tmp_path / "empty", "v1", registry=str(tmp_path / "r"))


_FULL_DISK_PUSH = """
import json, resource, signal, sys
from foundry_assets.publisher import PublishStepError, push_artifact
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    push_artifact(sys.argv[1], "v1", registry=sys.argv[2])
except PublishStepError as e:
    print(json.dumps({"step": e.step, "message": str(e)}))
"""


@pytest.mark.faults
def test_a_full_registry_fails_in_one_short_line_and_leaves_no_partial_tag(tmp_path: Path) -> None:
    """Files larger than the process may write (RLIMIT_FSIZE) stand for a full disk: the copy stops at the first
    failure with one line naming the registry and the reason, not copytree's list of every file that failed."""
    staging = _stage(tmp_path, b"w" * (256 * 1024))
    for shard in range(40):
        (staging / f"model-{shard:05d}-of-00040.safetensors").write_bytes(b"s" * (128 * 1024))
    registry = tmp_path / "registry"
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_PUSH, str(staging), str(registry)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    failure = json.loads(done.stdout.strip().splitlines()[-1])
    assert failure["step"] == "upload"
    message = failure["message"]
    assert len(message) < 1000, f"{len(message)} characters"
    assert str(registry) in message and "File too large" in message and "EFBIG" in message
    assert list(registry.iterdir()) == [], "no tag and no partial folder is left in the registry"
    assert (staging / "exam_report.json").exists(), "staging is kept for a retry"
