"""Receiving a job without Dagster: a drop folder copied and registered, or a clear refusal that writes nothing."""

from pathlib import Path

import pytest

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.intake.receive import receive_job
from foundry_assets.workspace import Workspace
from foundry_assets_tests.intake.conftest import write_drop


def _no_s3() -> None:
    raise AssertionError("a local drop needs no S3 client")


def test_a_drop_is_copied_into_the_workspace_and_registered(tmp_path: Path, workspace: Workspace) -> None:
    drop = write_drop(tmp_path / "inbox" / "job-a", "job-a")
    note = receive_job(workspace, job_id="job-a", drop=str(drop), s3_client=_no_s3)
    assert note == "Received drop 'job-a' as job job-a"
    registered = workspace.load("job-a")
    assert Path(registered.data.path).is_relative_to(workspace.root / "received" / "job-a")
    assert Path(registered.data.path).read_bytes() == (drop / "data.jsonl").read_bytes()
    assert registered.publish_target.registry == str(
        (drop / "registry").resolve()
    )  # read from the drop's folder


def test_drop_and_pasted_manifest_together_or_a_changed_drop_register_nothing(
    tmp_path: Path, workspace: Workspace
) -> None:
    drop = write_drop(tmp_path / "inbox" / "job-b", "job-b")
    with pytest.raises(ManifestError, match="give `drop` or `manifest_yaml`, not both"):
        receive_job(
            workspace, job_id="job-b", drop=str(drop), manifest_yaml="job_id: job-b", s3_client=_no_s3
        )
    with pytest.raises(DataError, match="changed after the sensor requested this run"):
        receive_job(workspace, job_id="job-b", drop=str(drop), drop_sha256="0" * 64, s3_client=_no_s3)
    with pytest.raises(ManifestError, match="holds job_id 'job-b', but this run is for job 'other'"):
        receive_job(workspace, job_id="other", drop=str(drop), s3_client=_no_s3)
    assert not workspace.manifest_path("job-b").exists() and not workspace.manifest_path("other").exists()
    assert not (workspace.root / "received").exists()


def test_a_job_registered_before_the_run_receives_nothing(workspace: Workspace) -> None:
    assert receive_job(workspace, job_id="registered", s3_client=_no_s3) is None
    assert not workspace.root.exists()
