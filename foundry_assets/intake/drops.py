"""Data drops: folders (local, or under an S3 prefix) that each hold a `manifest.yaml` and the data it names.

A drop goes through three moves: list it (cheap fingerprint of its files) and inspect it (the manifest parses, its
data lies inside the drop and is JSONL, its job_id is free) — the sensor does these and writes nothing, so a preview
of the sensor is a dry run — then, as the first step of the run the sensor requested, receive it: copy manifest and
data into the workspace under a content-addressed folder and register the manifest. Registering the copy (whose path
holds the content hash) makes a `job_id` reused with different data *or* a different manifest a refusal of
`Workspace.register`, not a silent second job.

The ledger (the sensor's cursor) remembers every drop by fingerprint, so a drop is evaluated once per content: a
valid one requests one run, an invalid one is reported once (with its reason, kept in the ledger) and then left alone
until its files change. No Dagster in here; `defs/sensors.py` and `defs/intake.py` are the thin layers over it.
"""

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import yaml

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.fsio import build_dir, copy_file, write_bytes
from foundry_assets.hashing import sha256_file, sha256_text
from foundry_assets.manifest import TrainingManifest, load_manifest, parse_manifest
from foundry_assets.workspace import Workspace

DROP_SHA256_TAG = "foundry/drop_sha256"
"""Run tag: the content the sensor inspected; the run's first step receives the drop only if it still has it."""

MANIFEST_NAME = "manifest.yaml"
"""The file that makes a folder a drop; producers write it last (after the data), so a half-written drop is unseen."""


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


def inspect_drop(
    drop_dir: Path, workspace: Workspace, *, name: str, paths_relative_to: Path | None = None
) -> DropPlan:
    """Validate a drop folder without writing anything: the manifest parses, its data lies inside the drop and is
    JSONL, and its job_id is not registered with other content. Raises ManifestError or DataError naming the problem.

    `paths_relative_to`: where the manifest's other relative paths (model_path, merge sources, registry) are read
    from; the drop's own folder for a local drop, the received copy (default) for one downloaded from S3.
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
    registered = manifest.resolve(paths_relative_to or dest)
    registered = registered.model_copy(
        update={"data": registered.data.model_copy(update={"path": str((dest / relative).resolve())})}
    )
    current = workspace.manifest_path(manifest.job_id)
    if (
        current.exists()
        and load_manifest(current, resolve_paths=False).canonical_json() != registered.canonical_json()
    ):
        raise _reused(manifest.job_id)
    return DropPlan(name, manifest.job_id, content, manifest_bytes, relative, data, dest, registered)


def _reused(job_id: str) -> ManifestError:
    return ManifestError(
        f"job_id {job_id!r} is already registered with different content (manifest or data); "
        "a job_id names one job: give this drop its own job_id"
    )


def receive_drop(
    drop_dir: Path,
    workspace: Workspace,
    *,
    name: str,
    paths_relative_to: Path | None = None,
    job_id: str | None = None,
    content_sha256: str | None = None,
) -> ReceivedDrop:
    """Inspect a drop folder, then copy it into `received/<job_id>/<content>/` and register its manifest.

    `job_id` / `content_sha256`, when given, must match the drop (the run's partition; the content the sensor saw),
    else nothing is written and a ManifestError / DataError says what differs.
    """
    plan = inspect_drop(drop_dir, workspace, name=name, paths_relative_to=paths_relative_to)
    if job_id is not None and plan.job_id != job_id:
        raise ManifestError(
            f"drop {name!r} holds job_id {plan.job_id!r}, but this run is for job {job_id!r}: launch it for "
            f"partition {plan.job_id!r}, or fix job_id in its {MANIFEST_NAME}"
        )
    if content_sha256 is not None and plan.content_sha256 != content_sha256:
        raise DataError(
            f"drop {name!r} changed after the sensor requested this run (content {plan.content_sha256[:16]} now, "
            f"{content_sha256[:16]} then); the sensor requests a new run for the new content"
        )
    created = not plan.dest.exists()
    if created:

        def build(tmp: Path) -> None:
            copy_file(plan.data_source, tmp / plan.data_relative)
            write_bytes(tmp / MANIFEST_NAME, plan.manifest_bytes)

        build_dir(_mkdir(plan.dest.parent) / plan.dest.name, build, replace=False)
    try:
        manifest_path = workspace.register(plan.registered)
    except ManifestError:
        if created:
            shutil.rmtree(plan.dest, ignore_errors=True)
        raise _reused(plan.job_id) from None
    return ReceivedDrop(name, plan.job_id, plan.content_sha256, manifest_path, plan.dest / plan.data_relative)


def inspect_listed(source: DropSource, ref: DropRef, workspace: Workspace) -> DropPlan:
    """Open a listed drop (an S3 drop is downloaded to a scratch folder, removed after) and inspect it."""
    with source.open(ref) as folder:
        in_place = isinstance(source, LocalDrops)
        return inspect_drop(folder, workspace, name=ref.name, paths_relative_to=folder if in_place else None)


def receive_location(
    location: str,
    workspace: Workspace,
    *,
    s3_client: Callable[[], Any],
    job_id: str | None = None,
    content_sha256: str | None = None,
) -> ReceivedDrop:
    """Receive the one drop at `location` (a folder, file:///folder or s3://bucket/prefix/drop/): what a run started
    by the sensor or from the launchpad does first. A local drop's other relative paths are read from its folder."""
    parent, _, name = location.rstrip("/").rpartition("/")
    source = drop_source(parent or ".", workspace=workspace, s3_client=s3_client)
    ref = next((r for r in source.list_drops() if r.name == name), None)
    if ref is None:
        raise DataError(f"no drop at {location!r}: expected a folder holding {MANIFEST_NAME} and its data")
    with source.open(ref) as folder:
        in_place = isinstance(source, LocalDrops)
        return receive_drop(
            folder,
            workspace,
            name=ref.name,
            paths_relative_to=folder if in_place else None,
            job_id=job_id,
            content_sha256=content_sha256,
        )


def receive_manifest_text(text: str, workspace: Workspace, *, job_id: str) -> TrainingManifest:
    """Register a manifest given as YAML text (pasted in the launchpad) for job `job_id`, with the same field-named
    validation as a manifest file. Its data must already be on the node: `data.path` absolute, a JSONL file."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError(f"manifest_yaml is not YAML: {e}") from None
    manifest = parse_manifest(document, source="manifest_yaml")
    if manifest.job_id != job_id:
        raise ManifestError(
            f"manifest_yaml holds job_id {manifest.job_id!r}, but this run is for job {job_id!r}: launch it for "
            f"partition {manifest.job_id!r} (add the partition first), or fix job_id"
        )
    data = Path(manifest.data.path)
    if not data.is_absolute():
        raise DataError(
            f"data.path {manifest.data.path!r} is relative: a pasted manifest needs the data's absolute path on the "
            "node (or launch with `drop`, whose data travels with its manifest)"
        )
    if not data.is_file():
        raise DataError(f"data.path {str(data)!r} is not a file on this node")
    _check_jsonl(data, str(data))
    manifest = manifest.resolve(data.parent)
    workspace.register(manifest)
    return manifest


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

    def claimant(self, job_id: str, run_key: str) -> str | None:
        """The drop already requested as `job_id` with other content (another run key), if any."""
        for name, entry in self.drops.items():
            if (
                entry.get("status") == "requested"
                and entry.get("job_id") == job_id
                and entry.get("run_key") != run_key
            ):
                return name
        return None

    def rejected(self) -> dict[str, str]:
        """Each invalid drop and why, as last evaluated."""
        return {
            name: str(e.get("reason", "")) for name, e in self.drops.items() if e.get("status") == "invalid"
        }

    def forget_missing(self, present: set[str]) -> None:
        """Drop entries of drops that are gone, so the cursor stays the size of the drop location."""
        self.drops = {name: entry for name, entry in self.drops.items() if name in present}
