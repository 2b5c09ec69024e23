"""One GPU per run through Dagster, shown with two fake GPU slots on the CPU (FOUNDRY_GPUS=0,1): with slot 0 held by
another run, the whole job runs on slot 1 — the training process sees CUDA_VISIBLE_DEVICES=1 — and gives it back."""

import os
from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.gpus import claim_gpu
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop
from foundry_assets_tests.test_gpus import hold

pytestmark = pytest.mark.slow


def test_a_run_claims_a_free_gpu_for_every_stage_and_releases_it(
    demo_root: Path,
    foundry_home: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FOUNDRY_GPUS", "0,1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    locks = foundry_home / "locks"
    other_run, held = hold(locks, "0")  # another run on this node holds GPU 0
    try:
        drop = make_drop(demo_root, "job-on-slot-1", compute={"device": "cpu"})
        outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    finally:
        other_run.kill()
        other_run.wait()
    assert held == "0"
    assert outcome.success, outcome.reason
    slots = {}
    for asset in ("curated_dataset", "trained_adapter", "merged_model", "exam_report"):
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=["job-on-slot-1"]), limit=1
        ).records[0]
        assert record.asset_materialization is not None
        slots[asset] = record.asset_materialization.metadata["gpu"].value
        if asset == "trained_adapter":  # as the training process saw it
            assert record.asset_materialization.metadata["cuda_visible_devices"].value == "1"
    assert set(slots.values()) == {"1"}, slots
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # the run's process gave its pin back
    both = [claim_gpu(locks, ["0", "1"], owner="after", wait_s=0).gpu for _ in range(2)]
    assert sorted(both) == ["0", "1"]  # and its claim


def test_a_cpu_node_claims_nothing(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOUNDRY_GPUS", "")
    drop = make_drop(demo_root, "job-no-gpu", compute={"device": "cpu"})
    outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    assert outcome.success, outcome.reason
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("trained_adapter"), asset_partitions=["job-no-gpu"]),
        limit=1,
    ).records[0]
    assert record.asset_materialization is not None
    assert record.asset_materialization.metadata["gpu"].value == "none"
