"""A real Dagster instance and a foundry workspace in temporary folders, and a demo drop for each test."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from foundry_assets.definitions import FOUNDRY_ASSETS, build_resources
from foundry_assets.defs.curator import curated_dataset
from foundry_assets.defs.intake import raw_data
from foundry_assets.demo.drop import DemoDrop, write_demo_drop
from foundry_assets.workspace import Workspace


@pytest.fixture
def foundry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "foundry"
    monkeypatch.setenv("FOUNDRY_HOME", str(home))
    return home


@pytest.fixture
def workspace(foundry_home: Path) -> Workspace:
    return Workspace(foundry_home)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every demo drop of the session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("demo")


def make_drop(root: Path, job_id: str, **manifest_updates: dict) -> DemoDrop:
    """A demo drop whose manifest sections are updated (shallow per section) by `manifest_updates`."""
    drop = write_demo_drop(root, job_id=job_id)
    document = yaml.safe_load(drop.manifest_path.read_text())
    for section, values in manifest_updates.items():
        document[section] = {**document.get(section, {}), **values}
    drop.manifest_path.write_text(yaml.safe_dump(document, sort_keys=False))
    return drop


@pytest.fixture
def live_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A live S3 server (moto) on loopback, with credentials and endpoint in the environment the resources read.

    Yields a boto3 client; build Definitions after this fixture so the S3 resource picks the settings up.
    """
    from foundry_assets_tests.publisher.conftest import ACCESS_KEY, SECRET_KEY, make_client, start_moto

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    server = start_moto()
    port = server.get_host_and_port()[1]
    monkeypatch.setenv("FOUNDRY_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    yield make_client(port)
    server.stop()


def curate_job(instance: dg.DagsterInstance, job_id: str) -> dg.ExecuteInProcessResult:
    """raw_data and curated_dataset of a registered job, through Dagster as in a run."""
    result = dg.materialize(
        FOUNDRY_ASSETS,
        selection=[raw_data, curated_dataset],
        partition_key=job_id,
        instance=instance,
        resources=build_resources(),
    )
    assert result.success
    return result


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    """The description (or error) of the first failed step of an in-process run."""
    event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    data = event.step_failure_data
    return str(data.user_failure_data.description if data.user_failure_data else data.error)
