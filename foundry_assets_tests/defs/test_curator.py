"""curated_dataset reads the manifest's curation section, embedding batch size included."""

from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.manifest import load_manifest
from foundry_assets.runner import register_job
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import curate_job, make_drop


@pytest.mark.parametrize(("batch_size", "used"), [(7, 7), (None, 64)])  # None: the CPU's default
def test_curation_batch_size_reaches_the_embedder(
    batch_size: int | None,
    used: int,
    demo_root: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
) -> None:
    job_id = f"prune-batch-{batch_size}"
    drop = make_drop(demo_root, job_id, curation={"batch_size": batch_size})
    register_job(load_manifest(drop.manifest_path), instance, workspace)
    result = curate_job(instance, job_id)
    [curated] = result.asset_materializations_for_node("curated_dataset")
    assert curated.metadata["embedding_batch_size"].value == used
    assert curated.metadata["kept"].value > 0
