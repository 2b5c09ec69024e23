"""The Git LFS registry against a local bare repository (git+file://), with no global git configuration."""

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from foundry_assets.errors import PublishError
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher import PublishStepError, backend_for, git_lfs, push_artifact
from foundry_assets.publisher.base import HASH_MANIFEST
from foundry_assets.publisher.git_lfs import GitLfsRegistry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("git-lfs") is None, reason="needs git-lfs (Debian package git-lfs)"),
]
WEIGHTS = "adapter_model.safetensors"


def _git(bare: Path, *args: str) -> str:
    """Run git against the bare repository and return its stdout."""
    return subprocess.run(
        ["git", "--git-dir", str(bare), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture()
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty bare repository, with git's global and system configuration hidden (a fresh CI machine)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "empty-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    (tmp_path / "empty-gitconfig").write_text("")
    path = tmp_path / "models.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def _lfs_pointer(bare: Path, ref: str, name: str) -> dict[str, str]:
    """The LFS pointer committed at `ref:name` in the bare repository, as {version, oid, size}."""
    text = _git(bare, "cat-file", "-p", f"{ref}:{name}")
    assert text.startswith("version https://git-lfs.github.com/spec/v1\n"), f"{name} is not an LFS pointer"
    return dict(line.split(" ", 1) for line in text.splitlines())


def test_publish_stores_weights_in_lfs_tags_and_removes_staging(
    bare: Path, staged: Callable[..., Path]
) -> None:
    staging = staged(b"safetensors bytes " * 1000)
    (staging / WEIGHTS).chmod(0o700)  # git keeps an executable bit: a 0700 weights file would check out 0755
    expected = sha256_tree(staging)
    result = push_artifact(staging, "v1.0.0", registry=bare.as_uri().replace("file:", "git+file:", 1))
    assert result.status == "published" and result.staging_removed and not staging.exists()
    assert result.uri == f"git+file://{bare}@v1.0.0" and result.files == expected
    assert _git(bare, "cat-file", "-t", "v1.0.0").strip() == "tag", "an annotated tag"
    assert _git(bare, "rev-parse", "main^{commit}") == _git(bare, "rev-parse", "v1.0.0^{commit}")
    pointer = _lfs_pointer(bare, "v1.0.0", WEIGHTS)
    oid = pointer["oid"].removeprefix("sha256:")
    assert oid == expected[WEIGHTS] and int(pointer["size"]) == 18000
    stored = bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == oid, "the LFS object is in the remote"
    assert _git(bare, "cat-file", "-p", "v1.0.0:exam_report.json") == '{"passed": true}', (
        "small files stay in git"
    )
    tree = set(_git(bare, "ls-tree", "-r", "--name-only", "v1.0.0").split())
    assert tree == {*expected, HASH_MANIFEST, ".gitattributes"}
    modes = {line.split()[0] for line in _git(bare, "ls-tree", "-r", "v1.0.0").splitlines()}
    assert modes == {"100644"}, "every file checks out readable (0644 under the usual umask), none executable"


def test_republish_is_a_noop_a_conflict_is_refused_and_a_new_tag_advances_the_branch(
    bare: Path, staged: Callable[..., Path]
) -> None:
    registry = f"git+file://{bare}"
    push_artifact(staged(), "v1", registry=registry)
    again = push_artifact(staged(), "v1", registry=registry)
    assert again.status == "unchanged" and again.staging_removed
    other = staged(b"other weights")
    with pytest.raises(PublishStepError, match=r"already exists .* different content") as info:
        push_artifact(other, "v1", registry=registry)
    assert info.value.step == "compare" and other.exists()
    v1 = _git(bare, "rev-parse", "v1^{commit}")
    result = push_artifact(other, "v2", registry=registry)
    assert result.status == "published" and not other.exists()
    assert _git(bare, "rev-parse", "main~1") == v1, "v2 is committed on top of v1"
    assert _lfs_pointer(bare, "v1", WEIGHTS)["oid"] != _lfs_pointer(bare, "v2", WEIGHTS)["oid"]
    assert backend_for(registry).remote_hashes("v1")[WEIGHTS] == hashlib.sha256(b"weights").hexdigest()


def test_branch_fragment_and_large_files_through_lfs(
    bare: Path, staged: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git_lfs, "LFS_SIZE_THRESHOLD", 1000)
    staging = staged()
    (staging / "tokenizer dir").mkdir()
    (staging / "tokenizer dir" / "tokenizer [big].json").write_text("x" * 5000)
    push_artifact(staging, "v1", registry=f"git+file://{bare}#releases")
    assert _git(bare, "for-each-ref", "--format=%(refname)", "refs/heads").split() == ["refs/heads/releases"]
    _lfs_pointer(bare, "v1", "tokenizer dir/tokenizer [big].json")


def test_foreign_tag_without_listing_is_refused(
    bare: Path, staged: Callable[..., Path], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    identity = ["-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run(
        ["git", "-C", str(work), *identity, "commit", "-q", "--allow-empty", "-m", "x"], check=True
    )
    subprocess.run(["git", "-C", str(work), "tag", "v1"], check=True)
    subprocess.run(
        ["git", "-C", str(work), "push", "-q", "origin", "HEAD:main", "v1"], check=True, capture_output=True
    )
    staging = staged()
    with pytest.raises(PublishStepError, match="already exists"):
        push_artifact(staging, "v1", registry=f"git+file://{bare}")
    assert staging.exists()


def test_unreachable_remote_names_the_step(staged: Callable[..., Path], tmp_path: Path) -> None:
    staging = staged()
    with pytest.raises(PublishStepError) as info:
        push_artifact(staging, "v1", registry=f"git+file://{tmp_path}/missing.git")
    assert info.value.step == "compare" and "git ls-remote failed" in str(info.value) and staging.exists()


@pytest.mark.parametrize(
    "uri",
    [
        "git+https://bot:hunter2@127.0.0.1:1/org/models.git",
        "git+https://ghp_hunter2@127.0.0.1:1/org/models.git",
    ],
)
def test_a_remote_holding_a_credential_is_refused_without_echoing_it(uri: str) -> None:
    with pytest.raises(PublishError, match="holds a credential") as info:
        GitLfsRegistry(uri)
    assert "hunter2" not in str(info.value) and "credential helper" in str(info.value)


def test_git_output_quoting_a_token_is_redacted(
    staged: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git quotes remote URLs in its errors, and an `insteadOf` rule or a proxy may have put a token in one: whatever
    git prints is redacted before it is raised (here a `git` ahead on PATH prints such an error)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(
        "#!/bin/sh\necho \"fatal: unable to access 'https://x-access-token:ghp_hunter2@127.0.0.1:1/org/m.git/"
        "?access_token=hunter2': Failed to connect\" >&2\nexit 128\n"
    )
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(PublishStepError) as info:
        push_artifact(staged(), "v1", registry="git+https://127.0.0.1:1/org/m.git")
    message = str(info.value)
    assert "hunter2" not in message and "Failed to connect" in message
    assert "https://***@127.0.0.1:1/org/m.git/?access_token=***" in message
