"""The publish handoff shared by every registry backend: hash → upload → verify → record → remove staging.

A backend only knows how to copy a folder into its registry, read back what a tag holds and download a tag's files;
the order of the handoff, the hash manifest, the refusal of a conflicting tag and the naming of the failed step live
here, once. The way back from a registry (`fetch_artifact`, `verify_artifact`) lives in `fetch.py`.
"""

import errno
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.errors import PublishError
from foundry_assets.redact import REGISTRY_CREDENTIALS_FIX, credential_problem, redact

log = logging.getLogger(__name__)
HASH_MANIFEST = "MANIFEST.sha256"
MANIFEST_FILE = "manifest.yaml"
EXAM_REPORT_FILE = "exam_report.json"
MODEL_CARD = "README.md"
PUBLISHER_FILES = frozenset({MODEL_CARD, MANIFEST_FILE, EXAM_REPORT_FILE, HASH_MANIFEST})
"""The files the publisher writes at a tag's root; every other file of a tag is the weights (and tokenizer)."""
LEGACY_WEIGHT_FOLDERS = ("adapter", "merged_model")
"""Where tags published by earlier versions hold their weights (one of them, named after the artifact kind)."""
"""A tag's own files beside the weights: the hash list, the training manifest and the exam report."""
ERROR_TEXT_LIMIT = 600
"""At most this many characters of a failure's own text go into a step's error (a remote's answer can be long)."""
PublishStep = Literal["prepare", "compare", "upload", "verify", "record", "cleanup"]
"""The handoff's steps, in order; a `PublishStepError` names the one that failed."""


FetchStep = Literal["listing", "download", "verify", "place"]
"""The steps of a fetch, in order; a `FetchStepError` names the one that failed."""
PUBLISHED_FILE_MODE, PUBLISHED_DIR_MODE = 0o644, 0o755
"""A published tag is readable by every user of a shared registry, whatever the publisher's umask and however the
files were written (safetensors writes 0600 files, a temporary folder is 0700)."""


def set_published_modes(folder: Path) -> None:
    """Give `folder`, every folder under it and every file in it the published modes (symlinks are left alone)."""
    os.chmod(folder, PUBLISHED_DIR_MODE)
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, PUBLISHED_DIR_MODE if path.is_dir() else PUBLISHED_FILE_MODE)


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
        problem = credential_problem("the registry URI", uri, REGISTRY_CREDENTIALS_FIX)
        if problem:
            raise PublishError(problem)
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


def _step(step: PublishStep, what: str, action: Callable[[], Any]) -> Any:
    """Run one handoff step, turning any failure into a `PublishStepError` that names it."""
    try:
        return action()
    except PublishStepError:
        raise
    except Exception as e:
        raise PublishStepError(step, f"{what}: {short_error(e)}") from e


def short_error(error: BaseException) -> str:
    """A failure as one short line, its URLs redacted: an OSError as `[ENOSPC] No space left on device: PATH` (a copy's `SOURCE -> DEST`), a
    `shutil.Error` (a list of every file that failed) as its first entry and the count, anything else as its text,
    cut at `ERROR_TEXT_LIMIT` characters."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        entries = error.args[0]  # copytree's (source, destination, reason) of each file that failed
        text = str(entries[0][-1]) + (f" (and {len(entries) - 1} more files)" if len(entries) > 1 else "")
    elif isinstance(error, OSError) and error.strerror:
        code = errno.errorcode.get(error.errno or 0, str(error.errno))
        files = " -> ".join(str(name) for name in (error.filename, error.filename2) if name)
        text = f"[{code}] {error.strerror}" + (f": {files}" if files else "")
    else:
        text = str(error) or type(error).__name__
    text = redact(text)
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "… (cut)"


def _differing(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """The paths whose SHA256 differs between two listings (or that only one of them holds), sorted."""
    return sorted(name for name in expected.keys() | found.keys() if expected.get(name) != found.get(name))


def weights_of(listing: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The weights of a tag listing ({path in the tag: SHA256}), keyed by their path inside the weights folder, and
    that folder's prefix in the tag: "" (the root, minus `PUBLISHER_FILES`) or, for a tag published before the
    root layout (no weights file at its root), "adapter/" or "merged_model/"."""
    at_root = {name: digest for name, digest in listing.items() if name not in PUBLISHER_FILES}
    if not any("/" not in name for name in at_root):
        for folder in LEGACY_WEIGHT_FOLDERS:
            prefix = folder + "/"
            legacy = {n[len(prefix) :]: d for n, d in listing.items() if n.startswith(prefix)}
            if legacy:
                return prefix, legacy
    return "", at_root
