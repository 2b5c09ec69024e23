"""The Select stage's entry point: the registered job's data copied into its job folder, and its lot number fixed."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from foundry_assets.audit import AuditTrail
from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.errors import DataError, FoundryError
from foundry_assets.fsio import copy_file
from foundry_assets.intake.lot import compute_lot
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher.gate import already_published, verified_release
from foundry_assets.stages import RawData
from foundry_assets.workspace import Workspace


def snapshot_drop(manifest: TrainingManifest, workspace: Workspace) -> RawData:
    """Copy `data.path` to the job's snapshot and hash the copy with the manifest: the lot number.

    Later stages read the snapshot, never `data.path`, so the data the lot number names is the data that trains even
    if the drop changes afterwards. A missing or unreadable file is a DataError naming `data.path`.
    """
    source = manifest.data.path
    snapshot = workspace.snapshot_path(manifest.job_id, Path(source).suffix)
    try:
        copy_file(source, snapshot)
        lot = compute_lot(snapshot, manifest)
    except (OSError, FoundryError) as e:
        raise DataError(f"data.path {source!r}: {e}") from e
    with open(snapshot, "rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return RawData(
        job_id=manifest.job_id,
        data_path=snapshot,
        lines=lines,
        data_format=get_strategy(manifest.method_config.type).data_format,
        **lot.to_metadata(),
    )


def nothing_to_run(
    manifest: TrainingManifest,
    lot: str,
    workspace: Workspace,
    trail: AuditTrail,
    verify: Callable[[str, str, dict[str, str]], Any],
) -> str | None:
    """Why a run of this lot need not train, or None: the lot is published under its tag, the registry copy still
    verifies (`gate.verified_release`) and its weights have left the node. Weights still on the node (a crash between
    `published` and the cleanup) let the run go on: its publish re-verifies the tag and removes them."""
    if not trail.path.is_file() or workspace.weight_dirs(manifest.job_id):
        return None
    release = verified_release(trail.records(), manifest.publish_target, lot, verify)
    return None if release is None else already_published(manifest.job_id, release, lot)
