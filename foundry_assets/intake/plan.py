"""Inspecting a drop without writing anything: what would be received, under which key, or why it cannot be."""

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.hashing import sha256_file, sha256_text
from foundry_assets.intake.drops import MANIFEST_NAME, DropFolder, DropRef, DropSource
from foundry_assets.manifest import (
    MAX_MANIFEST_BYTES,
    TrainingManifest,
    bounded,
    load_manifest,
    parse_manifest,
    read_yaml,
)
from foundry_assets.workspace import Workspace


def check_jsonl(path: Path, relative: str) -> None:
    """Every non-blank line of the data is UTF-8 and a JSON object, and there is at least one; a DataError names the
    line (never quotes it). A line nested too deep for Python's JSON reader is refused here, not raised as a
    RecursionError out of the sensor's tick."""
    records = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"data {relative!r} line {number} is not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
                    "; save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"data {relative!r} line {number} is not JSON ({e.msg})") from None
            except RecursionError:
                raise DataError(
                    f"data {relative!r} line {number} nests too deep to read; a record is a flat JSON object"
                ) from None
            except ValueError as e:  # JSON Python will not build, e.g. an integer of more than 4300 digits
                raise DataError(
                    f"data {relative!r} line {number} cannot be read: {bounded(str(e), 80)}"
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"data {relative!r} line {number} is not a JSON object")
            records += 1
    if not records:
        raise DataError(f"data {relative!r} holds no records")


def _inside_drop(drop: DropFolder, relative: str, what: str) -> Path:
    """The real path of the drop's file `relative`: symbolic links are followed only while they stay inside the
    drop, so a link to a credentials file is refused before anything reads it."""
    path = (drop.path / relative).resolve()
    if Path(relative).is_absolute() or not path.is_relative_to(drop.path.resolve()):
        raise DataError(
            f"{what} leads outside the drop (an absolute path, '..' or a symbolic link); a drop carries its files: "
            "put the file in the drop's folder and give its path relative to manifest.yaml"
        )
    if not path.is_file():
        raise DataError(f"{what} is not in the drop (looked for {path})")
    return path


def _read_manifest(drop: DropFolder) -> bytes:
    """The drop's manifest.yaml, at most MAX_MANIFEST_BYTES + 1 bytes (read_yaml refuses more), from a regular file
    inside the drop (O_NOFOLLOW, O_NONBLOCK: a link swapped in after the check or a FIFO is refused, not followed or
    waited on)."""
    path = _inside_drop(drop, MANIFEST_NAME, MANIFEST_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ManifestError(f"{MANIFEST_NAME} is not a regular file")
            return handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(f"{MANIFEST_NAME} cannot be read: {e.strerror}") from None


@dataclass(frozen=True)
class DropPlan:
    """A valid drop, inspected but not received: what `receive_drop` copies and registers, and under which key."""

    name: str
    job_id: str
    content_sha256: str
    manifest_bytes: bytes
    data_relative: str
    data_source: Path
    dest: Path
    registered: TrainingManifest
    """The manifest as it will be registered: relative paths resolved, data pointing at the received copy."""

    @property
    def run_key(self) -> str:
        """One run per job and content: a re-listed or re-uploaded identical drop never starts a second run."""
        return f"{self.job_id}@{self.content_sha256[:16]}"


def inspect_drop(drop: DropFolder, workspace: Workspace) -> DropPlan:
    """Validate an opened drop without writing anything: the manifest parses, its data lies inside the drop and is
    JSONL, and its job_id is not registered with other content. Raises ManifestError or DataError naming the problem.
    """
    manifest_bytes = _read_manifest(drop)
    manifest = parse_manifest(read_yaml(manifest_bytes, source=MANIFEST_NAME), source=MANIFEST_NAME)
    relative = manifest.data.path
    data = _inside_drop(drop, relative, f"data.path {relative!r}")
    check_jsonl(data, relative)
    content = sha256_text(f"{sha256_text(manifest_bytes.decode('utf-8'))}:{sha256_file(data)}")
    dest = workspace.received_dir() / manifest.job_id / content[:16]
    registered = manifest.resolve(drop.paths_relative_to or dest)
    registered = registered.model_copy(
        update={"data": registered.data.model_copy(update={"path": str((dest / relative).resolve())})}
    )
    current = workspace.manifest_path(manifest.job_id)
    if (
        current.exists()
        and load_manifest(current, resolve_paths=False).canonical_json() != registered.canonical_json()
    ):
        raise reused_error(manifest.job_id)
    return DropPlan(drop.name, manifest.job_id, content, manifest_bytes, relative, data, dest, registered)


def reused_error(job_id: str) -> ManifestError:
    """The refusal of a job_id already registered with other content."""
    return ManifestError(
        f"job_id {job_id!r} is already registered with different content (manifest or data); "
        "a job_id names one job: give this drop its own job_id"
    )


def inspect_listed(source: DropSource, ref: DropRef, workspace: Workspace) -> DropPlan:
    """Open a listed drop (an S3 drop is downloaded to a scratch folder, removed after) and inspect it."""
    with source.open(ref) as drop:
        return inspect_drop(drop, workspace)
