"""`push_artifact`: stage → upload → verify → (record) → remove staging, each step named when it fails."""

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from foundry_assets.hashing import sha256_file, sha256_tree, tree_digest
from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    PublishResult,
    PublishStepError,
    RegistryBackend,
    _differing,
    _step,
    render_hash_manifest,
)
from foundry_assets.publisher.registry import backend_for

log = logging.getLogger(__name__)


def push_artifact(
    path: str | Path,
    version_tag: str,
    *,
    registry: str | RegistryBackend,
    s3_client: Any = None,
    on_verified: Callable[[PublishResult], None] | None = None,
) -> PublishResult:
    """Publish the folder `path` as `version_tag`: upload, verify every file by SHA256, record, remove `path`.

    `registry` is a URI (see `backend_for`) or a ready backend. `on_verified` (e.g. writing the audit record) runs
    after verification and before staging is removed. The same content under an existing tag is a no-op success;
    different content is refused. Any failure leaves `path` in place, so a later call can finish the publish.
    """
    staging = Path(path)
    if not staging.is_dir():
        raise PublishStepError(
            "prepare", f"staging folder {str(staging)!r} does not exist; nothing to publish."
        )
    backend = (
        registry if isinstance(registry, RegistryBackend) else backend_for(registry, s3_client=s3_client)
    )
    hashes = _hash_staging(staging)
    uri, digest = backend.tag_uri(version_tag), tree_digest(hashes)
    status = _upload_unless_present(backend, staging, version_tag, hashes)
    _verify(backend, staging, version_tag, hashes)
    result = PublishResult(uri, version_tag, status, hashes, digest, staging_removed=False)
    if on_verified is not None:
        _step("record", f"recording the publish of {uri} (staging kept)", lambda: on_verified(result))
    _step("cleanup", f"removing staging {staging} after a verified publish", lambda: shutil.rmtree(staging))
    return PublishResult(uri, version_tag, status, hashes, digest, staging_removed=True)


def _hash_staging(staging: Path) -> dict[str, str]:
    """Hash every file of `staging` and write its `MANIFEST.sha256`; returns the hashes (the manifest's own aside)."""
    (staging / HASH_MANIFEST).unlink(missing_ok=True)
    hashes = sha256_tree(staging)
    if not hashes:
        raise PublishStepError("prepare", f"staging folder {str(staging)!r} is empty; nothing to publish.")
    (staging / HASH_MANIFEST).write_text(render_hash_manifest(hashes), encoding="utf-8")
    return hashes


def _upload_unless_present(
    backend: RegistryBackend, staging: Path, version_tag: str, hashes: dict[str, str]
) -> Literal["published", "unchanged"]:
    """Upload unless the tag already holds exactly these files; a tag with other content is refused."""
    uri = backend.tag_uri(version_tag)
    existing = _step(
        "compare", f"reading tag {version_tag!r} at {uri}", lambda: backend.existing_hashes(version_tag)
    )
    if existing is not None:
        if existing != hashes:
            changed = sorted(set(existing.items()) ^ set(hashes.items())) or [("(empty listing)", "")]
            raise PublishStepError(
                "compare",
                f"Tag {version_tag!r} already exists at {uri} with different content "
                f"({len(changed)} differing entries, e.g. {changed[0][0]!r}); publish under a new tag.",
            )
        log.info("Tag %s at %s already holds identical content; nothing to upload.", version_tag, uri)
        return "unchanged"
    log.info("Uploading %d files from %s to %s", len(hashes) + 1, staging, uri)
    _step(
        "upload",
        f"upload of {staging} to {uri} (staging kept for a retry)",
        lambda: backend.upload(staging, version_tag, hashes),
    )
    return "published"


def _verify(backend: RegistryBackend, staging: Path, version_tag: str, hashes: dict[str, str]) -> None:
    """Read the tag back and check every file (and the hash manifest) by SHA256."""
    uri = backend.tag_uri(version_tag)
    remote = _step(
        "verify", f"reading back {uri} (staging kept for a retry)", lambda: backend.remote_hashes(version_tag)
    )
    expected = {**hashes, HASH_MANIFEST: sha256_file(staging / HASH_MANIFEST)}
    if remote != expected:
        raise PublishStepError(
            "verify",
            f"verification of {uri} failed for {_differing(expected, remote)[:5]}; staging kept at {staging}.",
        )
    log.info("Verified %d files at %s by SHA256", len(remote), uri)
