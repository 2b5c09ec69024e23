"""Data drops: folders (local, or under an S3 prefix) that each hold a `manifest.yaml` and the data it names.

A drop is received in three moves: list it (cheap fingerprint of its files), validate it (the manifest parses, its
data lies inside the drop and is JSONL), then copy manifest and data into the workspace under a content-addressed
folder and register the manifest. Registering the copy (whose path holds the content hash) makes a `job_id` reused
with different data *or* a different manifest a refusal of `Workspace.register`, not a silent second job.

The ledger remembers every drop by fingerprint, so a drop is evaluated once per content: a valid one requests one
run, an invalid one is reported once and then left alone until its files change. No Dagster in here; the sensor in
`defs/sensors.py` is the thin layer that turns a `DropOutcome` into partitions, run requests and log lines.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import yaml

from foundry_assets.errors import DataError, FoundryError, ManifestError
from foundry_assets.lot import sha256_file, sha256_text
from foundry_assets.manifest import parse_manifest
from foundry_assets.workspace import Workspace

MANIFEST_NAME = "manifest.yaml"
"""The file that makes a folder a drop; producers write it last (after the data), so a half-written drop is unseen."""

REJECTED_LOG = "rejected_drops.jsonl"
"""Workspace file that lists every invalid drop once (name, fingerprint, reason), for operators and auditors."""


@dataclass(frozen=True)
class DropRef:
    """One drop as listed: its folder name, where it is, and a fingerprint of its files (names, sizes, versions)."""

    name: str
    location: str
    fingerprint: str


@dataclass(frozen=True)
class ReceivedDrop:
    """A valid drop, copied into the workspace and registered as job `job_id`."""

    name: str
    job_id: str
    content_sha256: str
    manifest_path: Path
    data_path: Path

    @property
    def run_key(self) -> str:
        """One run per job and content: a re-listed or re-uploaded identical drop never starts a second run."""
        return f"{self.job_id}@{self.content_sha256[:16]}"


class DropSource(Protocol):
    """Where drops appear."""

    def describe(self) -> str: ...

    def list_drops(self) -> list[DropRef]: ...

    def open(self, ref: DropRef) -> Any:
        """A context manager yielding a local folder that holds the drop's files."""
        ...


class LocalDrops:
    """Drops as sub-folders of a local folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def describe(self) -> str:
        return str(self.folder)

    def list_drops(self) -> list[DropRef]:
        if not self.folder.is_dir():
            return []
        refs = []
        for child in sorted(self.folder.iterdir()):
            if (
                not child.is_dir()
                or child.name.startswith((".", "_"))
                or not (child / MANIFEST_NAME).is_file()
            ):
                continue
            files = sorted(p for p in child.rglob("*") if p.is_file())
            stats = [(p.relative_to(child).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
            refs.append(DropRef(child.name, str(child), sha256_text(json.dumps(stats))))
        return refs

    @contextmanager
    def open(self, ref: DropRef) -> Iterator[Path]:
        yield Path(ref.location)


class S3Drops:
    """Drops as "folders" under an S3 prefix: `s3://bucket/prefix/<drop>/manifest.yaml` and its data beside it."""

    def __init__(self, client: Any, bucket: str, prefix: str, *, scratch: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.scratch = scratch

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _objects(self) -> dict[str, list[dict[str, Any]]]:
        drops: dict[str, list[dict[str, Any]]] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for obj in page.get("Contents", []):
                name, _, rest = obj["Key"][len(self.prefix) :].partition("/")
                if rest and not name.startswith((".", "_")):
                    drops.setdefault(name, []).append({**obj, "Relative": rest})
        return drops

    def list_drops(self) -> list[DropRef]:
        refs = []
        for name, objects in sorted(self._objects().items()):
            if not any(o["Relative"] == MANIFEST_NAME for o in objects):
                continue
            stats = sorted((o["Relative"], o["Size"], o.get("ETag", "")) for o in objects)
            refs.append(DropRef(name, f"{self.describe()}{name}/", sha256_text(json.dumps(stats))))
        return refs

    @contextmanager
    def open(self, ref: DropRef) -> Iterator[Path]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch, prefix=f".incoming-{ref.name}-") as tmp:
            root = Path(tmp)
            for obj in self._objects().get(ref.name, []):
                relative = PurePosixPath(obj["Relative"])
                if relative.is_absolute() or ".." in relative.parts:
                    raise DataError(f"drop {ref.name!r}: object key {obj['Key']!r} leaves the drop folder")
                target = root / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(self.bucket, obj["Key"], str(target))
            yield root


def drop_source(location: str, *, workspace: Workspace, s3_client: Callable[[], Any]) -> DropSource:
    """`s3://bucket/prefix` (through `s3_client()`), a `file://` URI or a folder path."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ManifestError(f"drop location {location!r} names no bucket; write s3://BUCKET/PREFIX")
        return S3Drops(s3_client(), parsed.netloc, parsed.path, scratch=workspace.root / "received")
    if parsed.scheme == "file":
        return LocalDrops(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ManifestError(f"drop location {location!r}: use a folder, file:///folder or s3://bucket/prefix")
    return LocalDrops(location)


def _check_jsonl(path: Path, relative: str) -> None:
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


def receive_drop(
    drop_dir: Path, workspace: Workspace, *, name: str, paths_relative_to: Path | None = None
) -> ReceivedDrop:
    """Validate a drop folder, copy it into `received/<job_id>/<content>/` and register its manifest.

    `paths_relative_to`: where the manifest's other relative paths (model_path, merge sources, registry) are read
    from; the drop's own folder for a local drop, the received copy (default) for one downloaded from S3.
    Raises ManifestError or DataError naming the problem; a drop that raises is invalid until its files change.
    """
    manifest_file = drop_dir / MANIFEST_NAME
    try:
        manifest_bytes = manifest_file.read_bytes()
        document = yaml.safe_load(manifest_bytes.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ManifestError(f"{MANIFEST_NAME} cannot be read as YAML: {e}") from None
    manifest = parse_manifest(document, source=MANIFEST_NAME)
    relative = manifest.data.path
    data = (drop_dir / relative).resolve()
    if Path(relative).is_absolute() or not data.is_relative_to(drop_dir.resolve()):
        raise DataError(
            f"data.path {relative!r} is outside the drop; a drop carries its data: put the file in the drop's "
            "folder and give its path relative to manifest.yaml"
        )
    if not data.is_file():
        raise DataError(f"data.path {relative!r} is not in the drop (looked for {data})")
    _check_jsonl(data, relative)
    content = sha256_text(f"{sha256_text(manifest_bytes.decode('utf-8'))}:{sha256_file(data)}")

    dest = workspace.root / "received" / manifest.job_id / content[:16]
    created = not dest.exists()
    if created:
        tmp = Path(tempfile.mkdtemp(dir=_mkdir(dest.parent), prefix=".tmp-"))
        (tmp / Path(relative)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, tmp / relative)
        (tmp / MANIFEST_NAME).write_bytes(manifest_bytes)
        os.replace(tmp, dest)
    registered = manifest.resolve(paths_relative_to or dest)
    registered = registered.model_copy(
        update={"data": registered.data.model_copy(update={"path": str((dest / relative).resolve())})}
    )
    try:
        manifest_path = workspace.register(registered)
    except ManifestError:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise ManifestError(
            f"job_id {manifest.job_id!r} is already registered with different content (manifest or data); "
            "a job_id names one job: give this drop its own job_id"
        ) from None
    return ReceivedDrop(name, manifest.job_id, content, manifest_path, dest / relative)


def receive(source: DropSource, ref: DropRef, workspace: Workspace) -> ReceivedDrop:
    """Open a listed drop (an S3 drop is downloaded to scratch first) and receive it into the workspace.

    A local drop's other relative paths are read from its own folder; an S3 drop's from the received copy.
    """
    with source.open(ref) as folder:
        in_place = isinstance(source, LocalDrops)
        return receive_drop(folder, workspace, name=ref.name, paths_relative_to=folder if in_place else None)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


DropStatus = Literal["requested", "invalid"]


@dataclass
class DropLedger:
    """What the sensor has done with each drop, by fingerprint; serialised as the sensor's cursor."""

    drops: dict[str, dict[str, Any]] = field(default_factory=dict)

    VERSION = 1

    @classmethod
    def loads(cls, cursor: str | None) -> "DropLedger":
        """The ledger in a cursor; an empty one for no cursor or one this version cannot read (every drop is then
        evaluated again, and run keys keep a valid drop from running twice)."""
        try:
            document = json.loads(cursor or "{}")
            return cls(dict(document["drops"])) if document.get("version") == cls.VERSION else cls()
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def dumps(self) -> str:
        return json.dumps(
            {"version": self.VERSION, "drops": self.drops}, sort_keys=True, separators=(",", ":")
        )

    def is_handled(self, ref: DropRef) -> bool:
        """True when this exact content of the drop was already evaluated (valid or not)."""
        return self.drops.get(ref.name, {}).get("fingerprint") == ref.fingerprint

    def mark(self, ref: DropRef, status: DropStatus, **details: Any) -> None:
        self.drops[ref.name] = {"fingerprint": ref.fingerprint, "status": status, **details}

    def forget_missing(self, present: set[str]) -> None:
        """Drop entries of drops that are gone, so the cursor stays the size of the drop location."""
        self.drops = {name: entry for name, entry in self.drops.items() if name in present}


@dataclass(frozen=True)
class Rejection:
    """An invalid drop, as written once to the workspace's `rejected_drops.jsonl`."""

    name: str
    location: str
    fingerprint: str
    reason: str
    ts: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def record_rejection(workspace: Workspace, ref: DropRef, error: FoundryError) -> Rejection:
    """Append the rejection to `rejected_drops.jsonl` in the workspace and return it."""
    rejection = Rejection(ref.name, ref.location, ref.fingerprint, str(error))
    path = workspace.root / REJECTED_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(asdict(rejection), sort_keys=True) + "\n")
    return rejection


def rejected_drops(workspace: Workspace) -> list[dict[str, Any]]:
    """Every rejection recorded in the workspace, oldest first."""
    path = workspace.root / REJECTED_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
