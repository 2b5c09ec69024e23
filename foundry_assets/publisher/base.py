"""The publish handoff shared by every registry backend: hash → upload → verify → remove staging.

A backend only knows how to copy a folder into its registry and read back what a tag holds; the order of the
handoff, the hash manifest and the refusal of a conflicting tag live here, once.
"""

import logging
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from foundry_assets.errors import PublishError
from foundry_assets.lot import sha256_tree, tree_digest

log = logging.getLogger(__name__)
HASH_MANIFEST = "MANIFEST.sha256"


@dataclass(frozen=True)
class PublishResult:
    uri: str
    tag: str
    status: Literal["published", "unchanged"]
    files: dict[str, str] = field(default_factory=dict)
    artifact_sha256: str = ""
    staging_removed: bool = False

    def to_metadata(self) -> dict[str, object]:
        return asdict(self)


def render_hash_manifest(hashes: dict[str, str]) -> str:
    """`sha256sum`-compatible listing, so a consumer can run `sha256sum -c MANIFEST.sha256`."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items()))


def parse_hash_manifest(text: str) -> dict[str, str]:
    hashes = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise PublishError(f"{HASH_MANIFEST} line {number} is not '<sha256>  <path>': {line!r}")
        hashes[name] = digest
    return hashes


class RegistryBackend(ABC):
    """One kind of registry. `uri` is the registry root; a tag is a folder/prefix under it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @classmethod
    @abstractmethod
    def scheme(cls) -> str: ...

    @abstractmethod
    def tag_uri(self, tag: str) -> str: ...

    @abstractmethod
    def existing_hashes(self, tag: str) -> dict[str, str] | None:
        """The hash manifest the tag holds, or None when the tag does not exist."""

    @abstractmethod
    def upload(self, staging: Path, tag: str, files: dict[str, str]) -> None:
        """Copy every file of `staging` under the tag so that the tag appears complete or not at all."""

    @abstractmethod
    def remote_hashes(self, tag: str) -> dict[str, str]:
        """SHA256 of every file the tag holds, computed from the registry's copy (the verification)."""


_BACKENDS: dict[str, type[RegistryBackend]] = {}


def register_backend(*, backend: type[RegistryBackend]) -> None:
    scheme = backend.scheme()
    if scheme in _BACKENDS:
        raise ValueError(f"A registry backend for {scheme!r} is already registered.")
    _BACKENDS[scheme] = backend


def backend_for(registry: str) -> RegistryBackend:
    """The backend for a registry URI: a plain path or file:// is local; others by scheme."""
    scheme = urlparse(registry).scheme
    scheme = "file" if len(scheme) <= 1 else scheme
    try:
        return _BACKENDS[scheme](registry)
    except KeyError:
        raise PublishError(
            f"No registry backend for {scheme!r} ({registry}); available: {', '.join(sorted(_BACKENDS))}."
        ) from None


def push_artifact(path: str | Path, version_tag: str, *, registry: str) -> PublishResult:
    """Publish the folder `path` as `version_tag`: upload, verify every file by SHA256, then remove `path`.

    The same content under an existing tag is a no-op success; different content is refused. Any failure leaves
    `path` in place, so a later call can finish the publish.
    """
    staging = Path(path)
    if not staging.is_dir():
        raise PublishError(f"Staging folder {str(staging)!r} does not exist; nothing to publish.")
    backend = backend_for(registry)
    (staging / HASH_MANIFEST).unlink(missing_ok=True)
    hashes = sha256_tree(staging)
    if not hashes:
        raise PublishError(f"Staging folder {str(staging)!r} is empty; nothing to publish.")
    (staging / HASH_MANIFEST).write_text(render_hash_manifest(hashes), encoding="utf-8")
    uri, digest = backend.tag_uri(version_tag), tree_digest(hashes)

    existing = backend.existing_hashes(version_tag)
    status: Literal["published", "unchanged"]
    if existing is not None:
        if existing != hashes:
            changed = sorted(set(existing.items()) ^ set(hashes.items()))
            raise PublishError(
                f"Tag {version_tag!r} already exists at {uri} with different content "
                f"({len(changed)} differing entries, e.g. {changed[0][0]!r}); publish under a new tag."
            )
        status = "unchanged"
        log.info("Tag %s at %s already holds identical content; nothing to upload.", version_tag, uri)
    else:
        try:
            backend.upload(staging, version_tag, hashes)
        except PublishError:
            raise
        except Exception as e:
            raise PublishError(f"upload of {staging} to {uri} failed: {e}; staging kept for a retry.") from e
        status = "published"

    remote = backend.remote_hashes(version_tag)
    expected = {**hashes, HASH_MANIFEST: sha256_tree(staging)[HASH_MANIFEST]}
    if remote != expected:
        bad = sorted(name for name in expected.keys() | remote.keys() if expected.get(name) != remote.get(name))
        raise PublishError(f"verification of {uri} failed for {bad[:5]}; staging kept at {staging}.")
    shutil.rmtree(staging)
    return PublishResult(uri, version_tag, status, hashes, digest, staging_removed=True)


def _register_builtin() -> None:
    from foundry_assets.publisher.local import LocalRegistry

    register_backend(backend=LocalRegistry)


_register_builtin()
