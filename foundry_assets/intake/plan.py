"""Inspecting a drop without writing anything: what would be received, under which key, or why it cannot be."""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.hashing import sha256_file, sha256_text
from foundry_assets.intake.drops import MANIFEST_NAME, DropFolder, DropRef, DropSource
from foundry_assets.manifest import TrainingManifest, load_manifest, parse_manifest, read_yaml
from foundry_assets.workspace import Workspace


def check_jsonl(path: Path, relative: str) -> None:
    """Every non-blank line of the data is a JSON object, and there is at least one; a DataError names the line."""
    records = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"data {relative!r} line {number} is not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"data {relative!r} line {number} is not a JSON object")
            records += 1
    if not records:
        raise DataError(f"data {relative!r} holds no records")


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
    try:
        manifest_bytes = (drop.path / MANIFEST_NAME).read_bytes()
        document = read_yaml(manifest_bytes.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ManifestError(f"{MANIFEST_NAME} cannot be read as YAML: {e}") from None
    manifest = parse_manifest(document, source=MANIFEST_NAME)
    relative = manifest.data.path
    data = (drop.path / relative).resolve()
    if Path(relative).is_absolute() or not data.is_relative_to(drop.path.resolve()):
        raise DataError(
            f"data.path {relative!r} is outside the drop; a drop carries its data: put the file in the drop's "
            "folder and give its path relative to manifest.yaml"
        )
    if not data.is_file():
        raise DataError(f"data.path {relative!r} is not in the drop (looked for {data})")
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
