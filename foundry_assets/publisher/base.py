"""The publish handoff shared by every registry backend: hash → upload → verify → record → remove staging.

A backend only knows how to copy a folder into its registry, read back what a tag holds and download a tag's files;
the order of the handoff, the hash manifest, the refusal of a conflicting tag and the naming of the failed step live
here, once. The way back from a registry (`fetch_artifact`, `verify_artifact`) lives in `fetch.py`.
"""

import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from foundry_assets.errors import PublishError
from foundry_assets.lot import sha256_file, sha256_tree, tree_digest

log = logging.getLogger(__name__)
HASH_MANIFEST = "MANIFEST.sha256"
PublishStep = Literal["prepare", "compare", "upload", "verify", "record", "cleanup"]
"""The handoff's steps, in order; a `PublishStepError` names the one that failed."""


FetchStep = Literal["listing", "download", "verify", "place"]
"""The steps of a fetch, in order; a `FetchStepError` names the one that failed."""


class PublishStepError(PublishError):
    """A publish failed at one named step; the staging copy is kept unless the step is `cleanup`."""

    def __init__(self, step: PublishStep, message: str) -> None:
        super().__init__(f"publish step {step!r} failed: {message}")
        self.step = step


class FetchStepError(PublishError):
    """A fetch from a registry failed at one named step; nothing is left at the destination."""

    def __init__(self, step: FetchStep, message: str) -> None:
        super().__init__(f"fetch step {step!r} failed: {message}")
        self.step = step


@dataclass(frozen=True)
class PublishResult:
    """What a publish produced: the tag's URI, whether anything was uploaded, and every file's SHA256."""

    uri: str
    tag: str
    status: Literal["published", "unchanged"]
    files: dict[str, str] = field(default_factory=dict)
    artifact_sha256: str = ""
    staging_removed: bool = False

    def to_metadata(self) -> dict[str, object]:
        """A JSON-able dict for asset metadata and the audit trail (holds no credentials)."""
        return asdict(self)


def render_hash_manifest(hashes: dict[str, str]) -> str:
    """`sha256sum`-compatible listing, so a consumer can run `sha256sum -c MANIFEST.sha256`."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items()))


def parse_hash_manifest(text: str) -> dict[str, str]:
    """Read a `MANIFEST.sha256` listing back into {path: sha256}."""
    hashes = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise PublishError(f"{HASH_MANIFEST} line {number} is not '<sha256>  <path>': {line!r}")
        hashes[name] = digest
    return hashes


class RegistryBackend(ABC):
    """One kind of registry. `uri` is the registry root; a tag is a folder/prefix/git tag under it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @classmethod
    @abstractmethod
    def scheme(cls) -> str:
        """The URI scheme this backend serves (lowercase)."""

    @classmethod
    def schemes(cls) -> tuple[str, ...]:
        """Every URI scheme this backend serves; by default only `scheme()`."""
        return (cls.scheme(),)

    @classmethod
    def from_uri(cls, uri: str, *, s3_client: Any = None) -> "RegistryBackend":
        """Build the backend for `uri`; options a backend does not use (here `s3_client`) are ignored."""
        return cls(uri)

    @abstractmethod
    def tag_uri(self, tag: str) -> str:
        """Where the tag lives, safe to log and to put in metadata (no credentials)."""

    @abstractmethod
    def existing_hashes(self, tag: str) -> dict[str, str] | None:
        """The hash manifest a complete tag holds, or None when the tag is absent (or an unfinished upload)."""

    @abstractmethod
    def upload(self, staging: Path, tag: str, files: dict[str, str]) -> None:
        """Copy every file of `staging` under the tag so that the tag appears complete or not at all."""

    @abstractmethod
    def remote_hashes(self, tag: str) -> dict[str, str]:
        """SHA256 of every file the tag holds, computed from the registry's copy (the verification)."""

    @abstractmethod
    def download(self, tag: str, files: dict[str, str], dest: Path) -> None:
        """Copy the tag's `files` ({relative path: expected SHA256}) into `dest` under the same relative paths.

        A backend may check each file's SHA256 while it streams; `fetch_artifact` checks every file again afterwards.
        """


_BACKENDS: dict[str, type[RegistryBackend]] = {}


def register_backend(*, backend: type[RegistryBackend]) -> None:
    """Register a backend under each of its schemes; a scheme registered twice is an error."""
    for scheme in backend.schemes():
        if scheme != scheme.lower():
            raise ValueError(f"Registry scheme {scheme!r} must be lowercase.")
        if scheme in _BACKENDS:
            raise ValueError(f"A registry backend for {scheme!r} is already registered.")
    for scheme in backend.schemes():
        _BACKENDS[scheme] = backend


def registered_schemes() -> tuple[str, ...]:
    """The URI schemes some backend serves, sorted (a plain path means `file`)."""
    return tuple(sorted(_BACKENDS))


def backend_for(registry: str, *, s3_client: Any = None) -> RegistryBackend:
    """The backend for a registry URI: a plain path or file:// is local; others by scheme.

    `s3_client` (a boto3 S3 client, or a zero-argument callable returning one) is used by `s3://` registries only.
    """
    scheme = urlparse(registry).scheme.lower()
    scheme = "file" if len(scheme) <= 1 else scheme
    if scheme not in _BACKENDS:
        raise PublishError(
            f"No registry backend for {scheme!r} ({registry}); available: {', '.join(sorted(_BACKENDS))}."
        )
    return _BACKENDS[scheme].from_uri(registry, s3_client=s3_client)


def _step(step: PublishStep, what: str, action: Callable[[], Any]) -> Any:
    """Run one handoff step, turning any failure into a `PublishStepError` that names it."""
    try:
        return action()
    except PublishStepError:
        raise
    except Exception as e:
        raise PublishStepError(step, f"{what}: {e}") from e


def _differing(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """The paths whose SHA256 differs between two listings (or that only one of them holds), sorted."""
    return sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name))


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
    (staging / HASH_MANIFEST).unlink(missing_ok=True)
    hashes = sha256_tree(staging)
    if not hashes:
        raise PublishStepError("prepare", f"staging folder {str(staging)!r} is empty; nothing to publish.")
    (staging / HASH_MANIFEST).write_text(render_hash_manifest(hashes), encoding="utf-8")
    uri, digest = backend.tag_uri(version_tag), tree_digest(hashes)

    existing = _step(
        "compare", f"reading tag {version_tag!r} at {uri}", lambda: backend.existing_hashes(version_tag)
    )
    status: Literal["published", "unchanged"]
    if existing is not None:
        if existing != hashes:
            changed = sorted(set(existing.items()) ^ set(hashes.items())) or [("(empty listing)", "")]
            raise PublishStepError(
                "compare",
                f"Tag {version_tag!r} already exists at {uri} with different content "
                f"({len(changed)} differing entries, e.g. {changed[0][0]!r}); publish under a new tag.",
            )
        status = "unchanged"
        log.info("Tag %s at %s already holds identical content; nothing to upload.", version_tag, uri)
    else:
        log.info("Uploading %d files from %s to %s", len(hashes) + 1, staging, uri)
        _step(
            "upload",
            f"upload of {staging} to {uri} (staging kept for a retry)",
            lambda: backend.upload(staging, version_tag, hashes),
        )
        status = "published"

    remote = _step(
        "verify", f"reading back {uri} (staging kept for a retry)", lambda: backend.remote_hashes(version_tag)
    )
    expected = {**hashes, HASH_MANIFEST: sha256_file(staging / HASH_MANIFEST)}
    if remote != expected:
        bad = sorted(
            name for name in expected.keys() | remote.keys() if expected.get(name) != remote.get(name)
        )
        raise PublishStepError(
            "verify", f"verification of {uri} failed for {bad[:5]}; staging kept at {staging}."
        )
    log.info("Verified %d files at %s by SHA256", len(remote), uri)
    result = PublishResult(uri, version_tag, status, hashes, digest, staging_removed=False)
    if on_verified is not None:
        _step("record", f"recording the publish of {uri} (staging kept)", lambda: on_verified(result))
    _step("cleanup", f"removing staging {staging} after a verified publish", lambda: shutil.rmtree(staging))
    return PublishResult(uri, version_tag, status, hashes, digest, staging_removed=True)


def _register_builtin() -> None:
    """Register the built-in backends explicitly (not by import side effects of their modules)."""
    from foundry_assets.publisher.git_lfs import GitLfsRegistry
    from foundry_assets.publisher.local import LocalRegistry
    from foundry_assets.publisher.s3 import S3Registry

    for backend in (LocalRegistry, S3Registry, GitLfsRegistry):
        register_backend(backend=backend)


_register_builtin()
