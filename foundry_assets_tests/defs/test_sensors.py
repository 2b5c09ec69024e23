"""The drop sensor on a real instance: one run per drop, invalid drops reported once, local folders and S3.

Evaluating the sensor writes nothing (the UI's "Preview tick result" is a dry run); the requested run's first step
receives and registers the drop.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from foundry_assets.definitions import FOUNDRY_ASSETS, build_definitions, build_resources
from foundry_assets.defs.intake import raw_data
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.sensors import DROP_LOCATION_ENV
from foundry_assets.hashing import sha256_file
from foundry_assets.intake.drops import DropFolder
from foundry_assets.intake.ledger import DropLedger
from foundry_assets.intake.plan import DropPlan, inspect_drop
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop
from foundry_assets_tests.intake.hostile import SECRET, assert_secret_absent, make_hostile_drops


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    monkeypatch.setenv(DROP_LOCATION_ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def template(demo_root: Path) -> Path:
    """A valid demo drop (tiny model built once), copied into each test's drop location."""
    return make_drop(demo_root, "sensor-template").manifest_path.parent


def put_drop(inbox: Path, template: Path, name: str, *, job_id: str | None = None, **updates: Any) -> Path:
    """Copy the template drop to `inbox/name`, with its job_id and manifest sections changed."""
    folder = inbox / name
    shutil.copytree(template, folder)
    document = yaml.safe_load((folder / "manifest.yaml").read_text())
    document["job_id"] = job_id or name
    for section, values in updates.items():
        document[section] = {**document.get(section, {}), **values}
    (folder / "manifest.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def tick(instance: dg.DagsterInstance, defs: dg.Definitions, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def("drop_sensor")
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=dict(defs.resources or {})
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def added_partitions(result: dg.SensorResult) -> list[str]:
    return [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]


def test_new_drop_adds_partition_and_requests_one_run_that_never_repeats(
    inbox: Path, template: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions()
    put_drop(inbox, template, "drop-a")
    before = files_under(workspace.root)

    first = tick(instance, defs, None)
    assert added_partitions(first) == ["drop-a"]
    [request] = first.run_requests or []
    assert request.partition_key == "drop-a"
    assert request.run_key and request.run_key.startswith("drop-a@")
    assert request.tags["foundry/drop"] == "drop-a"
    assert request.run_config == {"ops": {"raw_data": {"config": {"drop": str(inbox / "drop-a")}}}}
    assert files_under(workspace.root) == before  # a dry run: nothing received, nothing registered

    # The next tick, with the cursor the daemon stored, requests nothing.
    second = tick(instance, defs, first.cursor)
    assert not second.run_requests and not added_partitions(second)
    assert "No new drops" in str(second.skip_reason)

    # A lost cursor (a new sensor, a wiped instance) re-derives the same run key: Dagster never starts it twice.
    instance.add_dynamic_partitions(str(job_partitions.name), ["drop-a"])
    again = tick(instance, defs, None)
    assert [r.run_key for r in again.run_requests or []] == [request.run_key]
    assert not added_partitions(again)  # the partition exists now

    # The requested run's first asset receives the drop, registers it and fixes the lot number from the copy.
    result = dg.materialize(
        FOUNDRY_ASSETS,
        selection=[raw_data],
        partition_key=request.partition_key,
        instance=instance,
        resources=build_resources(),
        tags=request.tags,
        run_config=request.run_config,
    )
    assert result.success
    received = Path(workspace.load("drop-a").data.path)
    assert received.is_relative_to(workspace.root / "received" / "drop-a")
    assert sha256_file(received) == sha256_file(inbox / "drop-a" / "data.jsonl")
    [materialization] = result.asset_materializations_for_node("raw_data")
    assert materialization.metadata["dataset_sha256"].value == sha256_file(received)


def test_a_drop_changed_after_its_run_was_requested_is_refused_by_the_run(
    inbox: Path, template: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    defs = build_definitions()
    folder = put_drop(inbox, template, "drop-b")
    [request] = tick(instance, defs, None).run_requests or []
    with open(folder / "data.jsonl", "a") as handle:
        handle.write(json.dumps({"instruction": "Added later?", "output": "Yes."}) + "\n")
    instance.add_dynamic_partitions(str(job_partitions.name), ["drop-b"])
    result = dg.materialize(
        FOUNDRY_ASSETS,
        selection=[raw_data],
        partition_key="drop-b",
        instance=instance,
        resources=build_resources(),
        tags=request.tags,
        run_config=request.run_config,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "changed after the sensor requested this run" in str(failure.step_failure_data.user_failure_data)
    assert not workspace.manifest_path("drop-b").exists()


def test_invalid_drops_are_skipped_reported_once_and_reconsidered_only_when_changed(
    inbox: Path,
    template: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
) -> None:
    defs = build_definitions()
    put_drop(inbox, template, "good")
    bad_manifest = put_drop(inbox, template, "bad-manifest")
    (bad_manifest / "manifest.yaml").write_text("job_id: bad-manifest\nmethod_config: {type: lora-magic}\n")
    missing = put_drop(inbox, template, "missing-data")
    (missing / "data.jsonl").unlink()
    put_drop(inbox, template, "escapes", data={"path": "../good/data.jsonl"})
    not_jsonl = put_drop(inbox, template, "not-jsonl")
    (not_jsonl / "data.jsonl").write_text('{"instruction": "a", "output": "b"}\nthis is not json\n')
    reused = put_drop(inbox, template, "reused", job_id="good")
    with open(reused / "data.jsonl", "a") as handle:
        handle.write(json.dumps({"instruction": "One more?", "output": "Yes."}) + "\n")

    before = files_under(workspace.root)
    first = tick(instance, defs, None)
    assert [r.partition_key for r in first.run_requests or []] == ["good"]
    reasons = DropLedger.loads(first.cursor).rejected()  # kept in the cursor; `foundry drops` lists them
    assert set(reasons) == {"bad-manifest", "missing-data", "escapes", "not-jsonl", "reused"}
    assert "unknown training method 'lora-magic'" in reasons["bad-manifest"]
    assert "data.path 'data.jsonl' is not in the drop" in reasons["missing-data"]
    assert "outside the drop" in reasons["escapes"]
    assert "line 2 is not JSON" in reasons["not-jsonl"]
    assert "job_id 'good' is already requested by drop 'good' with different content" in reasons["reused"]
    logged = capfd.readouterr().err  # the sensor's log (shown on the tick in the UI)
    for name in reasons:
        assert f"Skipped invalid drop {name!r}" in logged
    assert (
        files_under(workspace.root) == before
    )  # evaluation wrote nothing, for valid and invalid drops alike

    # The same files again: nothing is retried, nothing is reported twice.
    second = tick(instance, defs, first.cursor)
    assert not second.run_requests
    assert "No new drops" in str(second.skip_reason)
    assert "Skipped invalid drop" not in capfd.readouterr().err
    assert DropLedger.loads(second.cursor).rejected() == reasons

    # A fixed drop (its files changed) is evaluated again and accepted.
    shutil.copyfile(template / "data.jsonl", missing / "data.jsonl")
    third = tick(instance, defs, second.cursor)
    assert [r.partition_key for r in third.run_requests or []] == ["missing-data"]
    assert added_partitions(third) == ["missing-data"]
    assert "missing-data" not in DropLedger.loads(third.cursor).rejected()


MAX_REASON = 400
"""A rejection reason's bound in these tests: MAX_QUOTED_CHARS of text and the few words around it."""


@pytest.mark.faults
def test_hostile_drops_are_rejected_alone_with_bounded_reasons_and_the_good_one_is_received(
    tmp_path: Path,
    inbox: Path,
    template: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fault injection (issue 13): one tick over every hostile drop and one good one. Before, the first of them
    raised out of the tick (RecursionError, UnicodeDecodeError, ValueError, MemoryError after 21 s and 1.5 GB for
    the alias bomb), so no tick ever finished and no drop was received; a symlinked manifest put the credentials
    it pointed at into the cursor."""
    expected = make_hostile_drops(inbox, template, tmp_path / "credentials")
    put_drop(inbox, template, "good")
    put_drop(inbox, template, "exhausts-memory")
    expected["exhausts-memory"] = "MemoryError at "  # a failure no check foresaw: named by type, not message

    def exhausting(drop: DropFolder, ws: Workspace) -> DropPlan:
        if drop.name == "exhausts-memory":
            raise MemoryError(f"while reading {SECRET}")
        return inspect_drop(drop, ws)

    monkeypatch.setattr("foundry_assets.intake.ledger.inspect_drop", exhausting)
    defs = build_definitions()
    result = tick(instance, defs, None)

    assert [r.partition_key for r in result.run_requests or []] == ["good"]
    reasons = DropLedger.loads(result.cursor).rejected()
    assert set(reasons) == set(expected)
    for name, phrase in expected.items():
        assert phrase in reasons[name], (name, reasons[name])
        assert len(reasons[name]) <= MAX_REASON, (name, len(reasons[name]))
    assert len(result.cursor or "") < len(expected) * (MAX_REASON + 200)
    logged = capfd.readouterr()
    for name in expected:
        assert f"Skipped invalid drop {name!r}" in logged.err
    assert_secret_absent(result.cursor, result.skip_reason, logged.out, logged.err)
    assert_secret_absent([(r.run_key, r.run_config, r.tags) for r in result.run_requests or []])
    assert_secret_absent(*(p.read_bytes().decode(errors="replace") for p in files_under(workspace.root)))

    # Handled once: the next tick evaluates none of them again.
    again = tick(instance, defs, result.cursor)
    assert not again.run_requests and "Skipped invalid drop" not in capfd.readouterr().err


def test_a_tick_leaves_drops_past_its_time_to_the_next_tick(
    inbox: Path,
    template: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dagster times a sensor evaluation out after 60 s and then keeps no cursor: a tick that tried every slow drop
    at once would try them again for ever. With no time left, each tick still evaluates one drop."""
    monkeypatch.setattr("foundry_assets.defs.sensors.TICK_SECONDS", 0.0)
    for name in ("drop-1", "drop-2"):
        put_drop(inbox, template, name)
    defs = build_definitions()
    first = tick(instance, defs, None)
    assert [r.partition_key for r in first.run_requests or []] == ["drop-1"]
    second = tick(instance, defs, first.cursor)
    assert [r.partition_key for r in second.run_requests or []] == ["drop-2"]


def test_no_drop_location_yet_is_a_skip_not_an_error(
    tmp_path: Path, workspace: Workspace, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DROP_LOCATION_ENV, str(tmp_path / "not-created-yet"))
    result = tick(instance, build_definitions(), None)
    assert not result.run_requests
    assert "No new drops" in str(result.skip_reason)


@pytest.fixture
def s3_drops(live_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An empty `drops` bucket on the live S3 server; the sensor finds it through the S3 resource."""
    monkeypatch.setenv(DROP_LOCATION_ENV, "s3://drops/synthesis/")
    live_s3.create_bucket(Bucket="drops")
    return live_s3


def upload(client: Any, folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "drops", f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.mark.slow
def test_s3_drop_is_downloaded_registered_and_its_run_completes(
    tmp_path: Path, template: Path, workspace: Workspace, instance: dg.DagsterInstance, s3_drops: Any
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    upload(s3_drops, put_drop(staging, template, "s3-job"), "synthesis/s3-job")
    half = put_drop(staging, template, "s3-half")
    s3_drops.upload_file(str(half / "data.jsonl"), "drops", "synthesis/s3-half/data.jsonl")  # no manifest yet
    defs = build_definitions()  # S3 settings are read when the code location loads

    first = tick(instance, defs, None)
    [request] = first.run_requests or []
    assert request.partition_key == "s3-job" and added_partitions(first) == ["s3-job"]
    assert request.run_config["ops"]["raw_data"]["config"]["drop"] == "s3://drops/synthesis/s3-job/"
    assert not files_under(workspace.root / "received")  # inspected in a scratch folder, gone again

    # The manifest arrives last: only then is the second drop seen.
    s3_drops.upload_file(str(half / "manifest.yaml"), "drops", "synthesis/s3-half/manifest.yaml")
    second = tick(instance, defs, first.cursor)
    assert [r.partition_key for r in second.run_requests or []] == ["s3-half"]

    # Run what the sensor requested, as the daemon would: the whole job, on the received copy.
    instance.add_dynamic_partitions(str(job_partitions.name), added_partitions(first))
    result = defs.resolve_job_def("foundry_job").execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        run_config=request.run_config,
        raise_on_error=False,
    )
    assert result.success
    registered = workspace.load("s3-job")  # received (downloaded) and registered by the run's first step
    assert sha256_file(registered.data.path) == sha256_file(staging / "s3-job" / "data.jsonl")
    published = result.output_for_node("published_artifact")
    assert published.tag == registered.publish_target.tag
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["foundry/drop"] == "s3-job"
