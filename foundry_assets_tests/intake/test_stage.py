"""snapshot_drop, the Select stage's entry point, without Dagster: the copy, its line count and its lot number."""

from pathlib import Path

import pytest

from foundry_assets.errors import DataError
from foundry_assets.intake.lot import compute_lot
from foundry_assets.intake.stage import snapshot_drop
from foundry_assets.manifest import load_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.intake.conftest import RECORDS, write_drop


@pytest.mark.parametrize(("method", "data_format"), [("lora", "sft"), ("orpo", "preference")])
def test_the_snapshot_is_a_copy_hashed_with_the_manifest(
    tmp_path: Path, workspace: Workspace, method: str, data_format: str
) -> None:
    drop = write_drop(tmp_path / "drop", "snap", method_config={"type": method})
    manifest = load_manifest(drop / "manifest.yaml")
    raw = snapshot_drop(manifest, workspace)
    assert raw.data_path == workspace.snapshot_path("snap", ".jsonl")
    assert raw.data_path.read_bytes() == (drop / "data.jsonl").read_bytes()
    assert raw.lines == len(RECORDS)  # the trailing blank line is not a record
    assert raw.data_format == data_format
    assert raw.lot() == compute_lot(raw.data_path, manifest).to_metadata()
    assert raw.job_id == "snap"


def test_missing_data_is_a_data_error_naming_data_path(tmp_path: Path, workspace: Workspace) -> None:
    drop = write_drop(tmp_path / "drop", "gone")
    manifest = load_manifest(drop / "manifest.yaml")
    (drop / "data.jsonl").unlink()
    with pytest.raises(DataError, match=rf"data\.path {str(drop / 'data.jsonl')!r}"):
        snapshot_drop(manifest, workspace)
    assert not workspace.snapshot_path("gone", ".jsonl").exists()
