"""No model is left on the node: once the publish is verified and recorded, the job's weights go; the records stay.

One demo job is run through Dagster for the module; later steps of the partition are then materialized on their own,
as from the UI, to show what a re-run does once the weights are gone.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from foundry_assets.audit import AuditTrail, verify_audit_log
from foundry_assets.audit_events import Event
from foundry_assets.audit_report import build_report
from foundry_assets.cli import main
from foundry_assets.definitions import FOUNDRY_ASSETS, build_resources
from foundry_assets.defs.alchemist import merged_model
from foundry_assets.defs.event_log import job_event_log
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher.base import HASH_MANIFEST, weights_of
from foundry_assets.runner import RunOutcome, run_manifest
from foundry_assets.workspace import RECORD_STAGES, WEIGHT_STAGES, Workspace
from foundry_assets_tests.defs.conftest import make_drop, step_failure

pytestmark = pytest.mark.slow
JOB = "job-cleaned"


@dataclass
class Published:
    instance: dg.DagsterInstance
    workspace: Workspace
    outcome: RunOutcome
    tag_dir: Path
    manifest: Path

    def records(self) -> list[dict[str, Any]]:
        return AuditTrail(self.workspace.audit_path(JOB)).records()

    def materialize_alone(self, asset: Any) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            FOUNDRY_ASSETS,
            selection=[asset],
            partition_key=JOB,
            instance=self.instance,
            resources=build_resources(),
            raise_on_error=False,
        )


@pytest.fixture(scope="module")
def published(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("cleanup")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "foundry"))
        (root / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
            workspace = Workspace(root / "foundry")
            drop = make_drop(demo_root, JOB)
            outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
            assert outcome.success, outcome.reason
            tag_dir = drop.registry / (outcome.published or {})["tag"]
            yield Published(instance, workspace, outcome, tag_dir, drop.manifest_path)


def test_weights_leave_the_node_and_the_records_stay(published: Published) -> None:
    workspace, job_dir = published.workspace, published.workspace.job_dir(JOB)
    assert not [stage for stage in WEIGHT_STAGES if workspace.stage_dir(JOB, stage).exists()]
    assert not [p.name for p in job_dir.iterdir() if p.name.startswith(".")], "no hidden leftovers either"
    assert all(workspace.stage_dir(JOB, stage).is_dir() for stage in RECORD_STAGES)
    assert workspace.manifest_path(JOB).is_file()
    assert (workspace.stage_dir(JOB, "exam") / "exam_report.json").is_file()
    assert (workspace.stage_dir(JOB, "curated") / "train.jsonl").is_file()

    records = published.records()
    saved = next(r for r in records if r["event"] == Event.MERGED)
    publish = next(r for r in records if r["event"] == "published")
    cleanup = records[-1]
    assert cleanup["event"] == Event.NODE_WEIGHTS_REMOVED and cleanup["data"]["after"] == publish["sha256"]
    assert {"adapter", "merged"} <= set(cleanup["data"]["folders"]) and cleanup["data"]["failed"] == {}
    assert cleanup["data"]["bytes_freed"] == sum(cleanup["data"]["folders"].values()) > 0
    assert publish["data"]["lot_number"] == published.outcome.lot_number
    # the demo job trains DoRA: `artifact: auto` publishes its merged model, which vLLM/TGI serve
    assert publish["data"]["registry"] and publish["data"]["artifact"] == "merged_model"

    # the registry holds what was merged, examined and recorded, at the tag's root
    assert weights_of(sha256_tree(published.tag_dir))[1] == saved["data"]["files"]
    assert {k: v for k, v in sha256_tree(published.tag_dir).items() if k != HASH_MANIFEST} == publish["data"][
        "files"
    ]
    assert (published.outcome.published or {})["weights_removed"]["bytes_freed"] == cleanup["data"][
        "bytes_freed"
    ]


def test_the_audit_chain_and_report_still_hold_without_the_weights(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    materializations, checks = job_event_log(published.instance, JOB)
    head = materializations["published_artifact"]["metadata"]["audit_head"]
    trail = published.workspace.audit_path(JOB)
    assert verify_audit_log(trail, expected_head=head).ok, "audit_head is the trail's tail, cleanup included"
    assert main(["audit", "verify", str(trail), "--head", head]) == 0
    assert "chain intact" in capsys.readouterr().out

    report = build_report(
        JOB,
        manifest=published.workspace.load(JOB),
        trail_path=trail,
        materializations=materializations,
        checks=checks,
    )
    assert report.ok, report.problems
    markdown = report.to_markdown()
    assert f"published → #{published.records()[-1]['seq']} {Event.NODE_WEIGHTS_REMOVED}" in markdown
    assert "weights removed from the node" in markdown


def test_publishing_again_reverifies_the_registry_copy_without_the_weights(published: Published) -> None:
    before = len(published.records())
    result = published.materialize_alone(published_artifact)
    assert result.success
    value = result.output_for_node("published_artifact")
    assert value.status == "unchanged" and value.files == (published.outcome.published or {})["files"]
    records = published.records()
    assert records[before:] == [], "verified again; nothing recorded twice, nothing left to remove"
    materializations, _ = job_event_log(published.instance, JOB)
    assert materializations["published_artifact"]["metadata"]["audit_head"] == records[-1]["sha256"]

    weights = published.tag_dir / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + b"rot!")
    try:
        damaged = published.materialize_alone(published_artifact)
    finally:
        weights.write_bytes(original)
    assert not damaged.success
    assert "model.safetensors" in step_failure(damaged)
    assert (
        json.loads(published.workspace.audit_path(JOB).read_text().splitlines()[-1])["event"]
        == "publish_failed"
    )


def test_merging_again_without_the_weights_says_why_and_what_to_do(published: Published) -> None:
    result = published.materialize_alone(merged_model)
    assert not result.success
    reason = step_failure(result)
    assert "was removed from this node after the job's artifact was published" in reason
    assert "foundry run MANIFEST" in reason and "Traceback" not in reason


def test_running_the_whole_job_again_trains_nothing_while_its_release_verifies(published: Published) -> None:
    """A re-run of a published lot (the UI's Materialize all, a re-execution): raw_data finds the lot's release and
    yields nothing, so no stage rebuilds weights that would never be published over the verified tag."""
    before = published.records()
    latest = next(r for r in reversed(before) if r["event"] == "published")
    again = run_manifest(published.manifest, instance=published.instance, workspace=published.workspace)
    assert again.success, again.reason
    assert again.published is None and [stage.step for stage in again.stages] == ["raw_data"]
    skipped = published.instance.get_records_for_run(again.run_id, of_type=dg.DagsterEventType.STEP_SKIPPED)
    assert {r.event_log_entry.step_key for r in skipped.records} >= {"trained_adapter", "published_artifact"}
    logged = [r.user_message for r in published.instance.all_logs(again.run_id)]
    assert any(f"audit record #{latest['seq']}" in m and "nothing to run" in m for m in logged), logged
    assert published.records() == before, "nothing accepted, trained or recorded again"
    assert not [stage for stage in WEIGHT_STAGES if published.workspace.stage_dir(JOB, stage).exists()]
    published_files = {k: v for k, v in sha256_tree(published.tag_dir).items() if k != HASH_MANIFEST}
    assert published_files == latest["data"]["files"], "the registry copy is untouched"


def test_weights_left_on_the_node_make_the_run_go_on_and_clean_up(published: Published) -> None:
    """A crash between `published` and the cleanup leaves weights on the node: a whole re-run then trains, its publish
    keeps the verified tag as the job's artifact (recording nothing new) and removes the weights."""
    before = published.records()
    latest = next(r for r in reversed(before) if r["event"] == "published")
    leftover = published.workspace.staging_dir(JOB, latest["data"]["tag"])
    leftover.mkdir(parents=True)
    (leftover / "adapter_model.safetensors").write_bytes(b"left by a crash")
    again = run_manifest(published.manifest, instance=published.instance, workspace=published.workspace)
    assert again.success, again.reason
    assert "trained_adapter" in [stage.step for stage in again.stages]
    # training is not bit-reproducible, so the rebuilt weights differ: the verified tag stays the job's artifact
    assert (again.published or {})["status"] == "unchanged"
    records = published.records()[len(before) :]
    assert [r["event"] for r in records].count(Event.PUBLISHED) == 0
    assert (
        records[-1]["event"] == Event.NODE_WEIGHTS_REMOVED
        and records[-1]["data"]["after"] == latest["sha256"]
    )
    assert not [stage for stage in WEIGHT_STAGES if published.workspace.stage_dir(JOB, stage).exists()]
    published_files = {k: v for k, v in sha256_tree(published.tag_dir).items() if k != HASH_MANIFEST}
    assert published_files == latest["data"]["files"], "the registry copy is untouched"
