"""The production instance (deploy/dagster-postgres.yaml) against a real PostgreSQL server: the demo job runs on it,
and a second instance object (another process or machine) reads back its runs, events, partitions and GPU slots."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.cli import main
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop
from foundry_assets_tests.deploy.conftest import REPO, PostgresServer

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_home(tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    for name, value in postgres.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("FOUNDRY_HOME", raising=False)
    return home


def test_demo_job_on_postgres_storage(postgres_home: Path, tmp_path: Path) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    drop = make_drop(tmp_path / "demo", "job-pg")
    with dg.DagsterInstance.from_config(str(postgres_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        outcome = run_manifest(
            drop.manifest_path, instance=instance, workspace=Workspace(postgres_home / "foundry")
        )
    assert outcome.success, outcome.reason

    # A fresh instance, as the webserver or a run worker on another node opens it, sees everything in PostgreSQL.
    with dg.DagsterInstance.from_config(str(postgres_home)) as reader:
        [run] = reader.get_runs()
        assert run.run_id == outcome.run_id and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "job-pg"
        assert reader.get_dynamic_partitions(str(job_partitions.name)) == ["job-pg"]
        records = reader.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_data"), asset_partitions=["job-pg"]), limit=1
        ).records
        assert records[0].asset_materialization is not None
        assert records[0].asset_materialization.metadata["lot_number"].value == outcome.lot_number
        assert reader.all_logs(outcome.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)

        # The "gpu" pool's slots live in the database: one training holds the only slot, a second waits.
        storage = reader.event_log_storage
        # trained_adapter's step created the pool at dagster.yaml's default limit when it ran
        assert storage.get_concurrency_info("gpu").slot_count == 1
        assert storage.claim_concurrency_slot("gpu", "run-a", "trained_adapter").is_claimed
        assert not storage.claim_concurrency_slot("gpu", "run-b", "trained_adapter").is_claimed
        storage.free_concurrency_slots_for_run("run-a")
        assert storage.claim_concurrency_slot("gpu", "run-b", "trained_adapter").is_claimed

    # The auditor's report reads the same chain from PostgreSQL.
    assert main(["audit", "report", "job-pg"]) == 0
