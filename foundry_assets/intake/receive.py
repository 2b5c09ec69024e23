"""Receiving a job at the start of its run: a drop copied into the workspace and registered, or a pasted manifest."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.fsio import build_dir, copy_file, write_bytes
from foundry_assets.intake.drops import MANIFEST_NAME, DropFolder, find_drop
from foundry_assets.intake.plan import check_jsonl, inspect_drop, reused_error
from foundry_assets.manifest import TrainingManifest, parse_manifest, read_yaml
from foundry_assets.workspace import Workspace

DROP_SHA256_TAG = "foundry/drop_sha256"
"""Run tag: the content the sensor inspected; the run's first step receives the drop only if it still has it."""


@dataclass(frozen=True)
class ReceivedDrop:
    """A valid drop, copied into the workspace and registered as job `job_id`."""

    name: str
    job_id: str
    content_sha256: str
    manifest_path: Path
    data_path: Path


def receive_drop(
    drop: DropFolder, workspace: Workspace, *, job_id: str | None = None, content_sha256: str | None = None
) -> ReceivedDrop:
    """Inspect an opened drop, then copy it into `received/<job_id>/<content>/` and register its manifest.

    `job_id` / `content_sha256`, when given, must match the drop (the run's partition; the content the sensor saw),
    else nothing is written and a ManifestError / DataError says what differs.
    """
    plan = inspect_drop(drop, workspace)
    if job_id is not None and plan.job_id != job_id:
        raise ManifestError(
            f"drop {drop.name!r} holds job_id {plan.job_id!r}, but this run is for job {job_id!r}: launch it for "
            f"partition {plan.job_id!r}, or fix job_id in its {MANIFEST_NAME}"
        )
    if content_sha256 is not None and plan.content_sha256 != content_sha256:
        raise DataError(
            f"drop {drop.name!r} changed after the sensor requested this run (content {plan.content_sha256[:16]} "
            f"now, {content_sha256[:16]} then); the sensor requests a new run for the new content"
        )
    created = not plan.dest.exists()
    if created:

        def build(tmp: Path) -> None:
            copy_file(plan.data_source, tmp / plan.data_relative)
            write_bytes(tmp / MANIFEST_NAME, plan.manifest_bytes)

        build_dir(plan.dest, build, replace=False)
    try:
        manifest_path = workspace.register(plan.registered)
    except ManifestError:
        if created:
            shutil.rmtree(plan.dest, ignore_errors=True)
        raise reused_error(plan.job_id) from None
    return ReceivedDrop(
        drop.name, plan.job_id, plan.content_sha256, manifest_path, plan.dest / plan.data_relative
    )


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
    source, ref = find_drop(location, workspace=workspace, s3_client=s3_client)
    with source.open(ref) as drop:
        return receive_drop(drop, workspace, job_id=job_id, content_sha256=content_sha256)


def receive_manifest_text(text: str, workspace: Workspace, *, job_id: str) -> TrainingManifest:
    """Register a manifest given as YAML text (pasted in the launchpad) for job `job_id`, with the same field-named
    validation as a manifest file. Its data must already be on the node: `data.path` absolute, a JSONL file."""
    manifest = parse_manifest(read_yaml(text, source="manifest_yaml"), source="manifest_yaml")
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
    check_jsonl(data, str(data))
    manifest = manifest.resolve(data.parent)
    workspace.register(manifest)
    return manifest


def receive_job(
    workspace: Workspace,
    *,
    job_id: str,
    drop: str = "",
    manifest_yaml: str = "",
    drop_sha256: str | None = None,
    s3_client: Callable[[], Any],
) -> str | None:
    """What a run does first when it brings its own job: receive the drop at `drop` (its content must still be
    `drop_sha256`, the run's tag from the sensor, when given) or register the pasted `manifest_yaml`, as job `job_id`
    (the run's partition). Neither: the job was registered before the run (`foundry run`). Both: a ManifestError.

    Returns what was received, in words for the run's log (None when nothing was).
    """
    if drop and manifest_yaml:
        raise ManifestError("launch config: give `drop` or `manifest_yaml`, not both")
    if drop:
        received = receive_location(
            drop, workspace, s3_client=s3_client, job_id=job_id, content_sha256=drop_sha256
        )
        return f"Received drop {received.name!r} as job {received.job_id}"
    if manifest_yaml:
        receive_manifest_text(manifest_yaml, workspace, job_id=job_id)
        return f"Registered the launchpad's manifest as job {job_id}"
    return None
