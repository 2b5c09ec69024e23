"""Where drops appear and how one is opened: a local folder of drop folders, or "folders" under an S3 prefix."""

import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlparse

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.hashing import sha256_text
from foundry_assets.workspace import Workspace

MANIFEST_NAME = "manifest.yaml"
"""The file that makes a folder a drop; producers write it last (after the data), so a half-written drop is unseen."""


@dataclass(frozen=True)
class DropRef:
    """One drop as listed: its folder name, where it is, and a fingerprint of its files (names, sizes, versions)."""

    name: str
    location: str
    fingerprint: str


@dataclass(frozen=True)
class DropFolder:
    """An opened drop: a local folder holding its files, while the drop is open."""

    name: str
    path: Path
    paths_relative_to: Path | None
    """Where the manifest's other relative paths (model_path, merge sources, registry) are read from: the drop's own
    folder for a local drop; None for a downloaded one (its scratch copy is gone after), read from the received copy."""


class DropSource(Protocol):
    """Where drops appear."""

    def describe(self) -> str: ...

    def list_drops(self) -> list[DropRef]: ...

    def open(self, ref: DropRef) -> AbstractContextManager[DropFolder]:
        """The drop's files in a local folder, for as long as the context lasts."""
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
    def open(self, ref: DropRef) -> Iterator[DropFolder]:
        """The drop in place: nothing to copy."""
        folder = Path(ref.location)
        yield DropFolder(ref.name, folder, paths_relative_to=folder)


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
    def open(self, ref: DropRef) -> Iterator[DropFolder]:
        """The drop downloaded to a scratch folder, removed when the context ends."""
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
            yield DropFolder(ref.name, root, paths_relative_to=None)


def drop_source(location: str, *, workspace: Workspace, s3_client: Callable[[], Any]) -> DropSource:
    """`s3://bucket/prefix` (through `s3_client()`), a `file://` URI or a folder path."""
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ManifestError(f"drop location {location!r} names no bucket; write s3://BUCKET/PREFIX")
        return S3Drops(s3_client(), parsed.netloc, parsed.path, scratch=workspace.received_dir())
    if parsed.scheme == "file":
        return LocalDrops(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise ManifestError(f"drop location {location!r}: use a folder, file:///folder or s3://bucket/prefix")
    return LocalDrops(location)


def find_drop(
    location: str, *, workspace: Workspace, s3_client: Callable[[], Any]
) -> tuple[DropSource, DropRef]:
    """The one drop at `location` (a folder, file:///folder or s3://bucket/prefix/drop/) and the source it is in."""
    parent, _, name = location.rstrip("/").rpartition("/")
    source = drop_source(parent or ".", workspace=workspace, s3_client=s3_client)
    ref = next((r for r in source.list_drops() if r.name == name), None)
    if ref is None:
        raise DataError(f"no drop at {location!r}: expected a folder holding {MANIFEST_NAME} and its data")
    return source, ref
