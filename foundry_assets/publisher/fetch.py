"""The way back from a registry: fetch a published tag (its weights, or one folder of it), and re-verify a tag against
its record.

`fetch_artifact` runs listing → download → verify → place: the tag's MANIFEST.sha256 is read (and compared with the
hashes recorded at publish time, when the caller has them), the backend downloads the files into a hidden sibling of
the destination, every file is hashed against the listing, and only then is the folder renamed into place. A failure
at any step is a `FetchStepError` naming the step (and the files), and leaves the destination as it was.
"""

import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundry_assets.fsio import replace_dir
from foundry_assets.hashing import sha256_tree, tree_digest
from foundry_assets.publisher.base import (
    HASH_MANIFEST,
    FetchStep,
    FetchStepError,
    PublishResult,
    PublishStepError,
    RegistryBackend,
    _differing,
    _step,
    short_error,
    weights_of,
)
from foundry_assets.publisher.registry import backend_for

log = logging.getLogger(__name__)


def _fetch_step(step: FetchStep, what: str, action: Callable[[], Any]) -> Any:
    """Run one fetch step, turning any failure into a `FetchStepError` that names it."""
    try:
        return action()
    except FetchStepError:
        raise
    except Exception as e:
        raise FetchStepError(step, f"{what}: {short_error(e)}") from e


@dataclass(frozen=True)
class FetchResult:
    """What a fetch placed: the local folder, the tag it came from, and every fetched file's SHA256."""

    path: Path
    uri: str
    tag: str
    subfolder: str
    files: dict[str, str] = field(default_factory=dict)
    """SHA256 of every fetched file, keyed by its path relative to `path`."""
    listing: dict[str, str] = field(default_factory=dict)
    """The tag's whole MANIFEST.sha256 ({path inside the tag: SHA256})."""

    def to_metadata(self) -> dict[str, object]:
        """A JSON-able dict for asset metadata and the audit trail (holds no credentials)."""
        return {**asdict(self), "path": str(self.path)}


def _tag_listing(backend: RegistryBackend, tag: str) -> dict[str, str]:
    """The tag's MANIFEST.sha256; a missing tag or one without a listing is a `FetchStepError`."""
    uri = backend.tag_uri(tag)
    listing = _fetch_step("listing", f"reading tag {tag!r} at {uri}", lambda: backend.existing_hashes(tag))
    if listing is None:
        raise FetchStepError(
            "listing",
            f"tag {tag!r} does not exist at {uri}; check the registry URI and the tag, or publish it first.",
        )
    if not listing:
        raise FetchStepError(
            "listing", f"tag {tag!r} at {uri} has no {HASH_MANIFEST}; it was not published by the foundry."
        )
    return dict(listing)


def _wanted(listing: dict[str, str], subfolder: str, weights: bool, what: str) -> tuple[str, dict[str, str]]:
    """The prefix of the files to fetch and those files ({path in the tag: SHA256}): the whole tag, its `subfolder`,
    or its weights; none is a `FetchStepError` saying what the tag holds."""
    if weights:
        prefix, inside = weights_of(listing)
        wanted = {prefix + name: digest for name, digest in inside.items()}
    else:
        prefix = subfolder.strip("/") + "/" if subfolder.strip("/") else ""
        wanted = {name: digest for name, digest in listing.items() if name.startswith(prefix)}
    if not wanted:
        folders = sorted({name.split("/", 1)[0] for name in listing if "/" in name})
        missing = "weights (only the publisher's files)" if weights else f"{prefix!r} folder"
        raise FetchStepError("listing", f"{what} holds no {missing} (it holds: {folders or 'files only'}).")
    return prefix, wanted


def fetch_artifact(
    registry: str | RegistryBackend,
    tag: str,
    dest: str | Path,
    *,
    subfolder: str = "",
    weights: bool = False,
    expected: dict[str, str] | None = None,
    s3_client: Any = None,
) -> FetchResult:
    """Fetch the published `tag` (or only its `subfolder`; with `weights`, only its weights) into the folder `dest`.

    `weights` fetches what a loader needs and nothing of the publisher's own (`layout.weights_of`): the tag root's
    files but the manifest, exam report, card and listing, or the `adapter/`/`merged_model/` folder of a tag published
    before the root layout; `FetchResult.subfolder` says which. Every file is checked against the tag's
    MANIFEST.sha256 (and, with `expected`, that listing must equal the hashes the caller recorded at publish time)
    before the download, a hidden sibling of `dest`, is renamed into place; an existing `dest` is replaced only then.
    Any failure leaves `dest` as it was and names the step and the file.
    """
    if weights and subfolder:
        raise ValueError("fetch_artifact: pass `subfolder` or `weights`, not both")
    backend = (
        registry if isinstance(registry, RegistryBackend) else backend_for(registry, s3_client=s3_client)
    )
    uri, dest = backend.tag_uri(tag), Path(dest)
    listing = _tag_listing(backend, tag)
    if expected is not None and listing != expected:
        bad = _differing(expected, listing)
        raise FetchStepError(
            "listing",
            f"tag {tag!r} at {uri} does not hold what was published: {HASH_MANIFEST} differs from the recorded "
            f"hashes for {bad[:5]}; the tag was replaced or edited in the registry.",
        )
    prefix, wanted = _wanted(listing, subfolder, weights, f"tag {tag!r} at {uri}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        what = prefix or ("the weights" if weights else "every file")
        log.info("Fetching %d files (%s) of %s into %s", len(wanted), what, uri, dest)
        _fetch_step(
            "download",
            f"download of {what} from {uri}",
            lambda: backend.download(tag, wanted, partial),
        )
        found = sha256_tree(partial) if partial.is_dir() else {}
        bad = _differing(wanted, found)
        if bad:
            raise FetchStepError(
                "verify",
                f"{bad[:5]} from {uri} do not match the tag's {HASH_MANIFEST} (missing, extra or damaged in the "
                "registry); nothing was placed. Re-publish the tag from its source, or restore the registry copy.",
            )
        fetched = partial / prefix if prefix else partial
        _fetch_step("place", f"moving the fetched files to {dest}", lambda: replace_dir(fetched, dest))
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    files = {name[len(prefix) :]: digest for name, digest in wanted.items()}
    log.info("Fetched and verified %d files of %s into %s", len(files), uri, dest)
    return FetchResult(dest, uri, tag, prefix.rstrip("/"), files, listing)


def verify_artifact(
    registry: str | RegistryBackend, tag: str, files: dict[str, str], *, s3_client: Any = None
) -> PublishResult:
    """Check that the published `tag` still holds exactly `files` (as recorded at publish time), read back by SHA256.

    For a job whose weights left the node after its publish: nothing is staged or uploaded; the result's status is
    "unchanged". A missing, replaced or damaged tag is a `PublishStepError` naming the differing files.
    """
    backend = (
        registry if isinstance(registry, RegistryBackend) else backend_for(registry, s3_client=s3_client)
    )
    uri = backend.tag_uri(tag)
    listing = _step("compare", f"reading tag {tag!r} at {uri}", lambda: backend.existing_hashes(tag))
    if listing is None:
        raise PublishStepError(
            "compare", f"tag {tag!r} no longer exists at {uri}; it must be published again."
        )
    if listing != files:
        raise PublishStepError(
            "compare",
            f"tag {tag!r} at {uri} lists other files than were published: {_differing(files, listing)[:5]}",
        )
    remote = _step("verify", f"reading back {uri}", lambda: backend.remote_hashes(tag))
    remote.pop(HASH_MANIFEST, None)
    if remote != files:
        raise PublishStepError(
            "verify",
            f"the registry copy at {uri} is damaged: {_differing(files, remote)[:5]} differ by SHA256.",
        )
    log.info("Verified %d files at %s by SHA256 against the publish record", len(remote), uri)
    return PublishResult(uri, tag, "unchanged", dict(files), tree_digest(files), staging_removed=False)
