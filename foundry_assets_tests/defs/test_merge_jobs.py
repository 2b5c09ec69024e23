"""Story C on a real Dagster instance: two trained jobs merged by DARE-TIES in a third, with lineage and the gate.

The source jobs publish their adapters and their weights leave the node; the merge job fetches them from the registry.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_report import build_report
from foundry_assets.defs.event_log import job_event_log
from foundry_assets.demo.stories import StoryDrops, write_story_c
from foundry_assets.hashing import sha256_file, sha256_tree
from foundry_assets.publisher.base import weights_of
from foundry_assets.runner import RunOutcome, run_manifest
from foundry_assets.workspace import WEIGHT_STAGES, Workspace

pytestmark = pytest.mark.slow


def _latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.AssetMaterialization | None:
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    )
    return result.records[0].asset_materialization if result.records else None


class Story:
    """One instance and workspace for the module, with the logic and safety jobs already run."""

    def __init__(self, root: Path, instance: dg.DagsterInstance, workspace: Workspace) -> None:
        self.root, self.instance, self.workspace = root, instance, workspace
        self.drops: StoryDrops = write_story_c(root)
        self.sources = {
            name: run_manifest(path, instance=instance, workspace=workspace)
            for name, path in (("logic", self.drops.logic), ("safety", self.drops.safety))
        }

    def merge_job(self, job_id: str, **exam: object) -> Path:
        """A copy of the story's merge manifest under another job_id (and exam settings)."""
        document = yaml.safe_load(self.drops.merge.read_text())
        document["job_id"] = job_id
        document["publish_target"]["tag"] = f"v0.1.0-{job_id}"
        document["exam"] = {**document["exam"], **exam}
        path = self.drops.merge.parent / f"{job_id}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def run(self, path: Path) -> RunOutcome:
        return run_manifest(path, instance=self.instance, workspace=self.workspace)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("story")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "foundry"))
        (root / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
            yield Story(root, instance, Workspace(root / "foundry"))


def test_source_jobs_learn_their_skill_and_beat_the_base(story: Story) -> None:
    for name, metric in (("logic", "logic_score"), ("safety", "safety_rate")):
        outcome = story.sources[name]
        assert outcome.success, outcome.reason
        report = json.loads(
            story.workspace.stage_dir(outcome.job_id, "exam").joinpath("exam_report.json").read_text()
        )
        row = next(r for r in report["metrics"] if r["name"] == metric)
        assert row["result"] == "pass" and row["baseline"] == 0.0 and row["candidate"] >= 0.8, row
        # published, then the weights left the node; the records (and the curated data) stay
        assert (outcome.published or {})["artifact"] == "adapter"
        assert not [
            stage for stage in WEIGHT_STAGES if story.workspace.stage_dir(outcome.job_id, stage).exists()
        ]
        assert story.workspace.stage_dir(outcome.job_id, "curated").joinpath("train.jsonl").is_file()
        tag = story.drops.registry / (outcome.published or {})["tag"]
        assert json.loads((tag / "adapter_config.json").read_text())["base_model_name_or_path"] == (
            "foundry-demo/tiny-llama-story"
        ), "the adapter sits at the tag's root and names the manifest's base_model"


def test_merge_job_merges_both_sources_with_lineage_and_publishes(story: Story) -> None:
    outcome = story.run(story.drops.merge)
    assert outcome.success, outcome.reason
    job_id = outcome.job_id
    merged = _latest(story.instance, "merged_model", job_id)
    assert merged is not None
    assert merged.metadata["method"].value == "dare_ties"
    lineage = merged.metadata["source_jobs"].value
    assert [s["job_id"] for s in lineage] == ["story-c-logic", "story-c-safety"]
    for source in lineage:  # fetched from the registry the source job published to, into this job's folder
        published = story.drops.registry / f"v0.1.0-{source['job_id']}"
        assert source["published_uri"] == published.resolve().as_uri()
        assert source["adapter_dir"] == str(story.workspace.source_dir(job_id, source["job_id"]))
        assert source["adapter_sha256"] == weights_of(sha256_tree(published))[1]
        assert source["lot_number"] == story.sources[source["job_id"].split("-")[-1]].lot_number
        assert source["exam"]["passed"] is True
        assert source["density"] == 0.7
    assert merged.metadata["include_own_adapter"].value is False
    trained = _latest(story.instance, "trained_adapter", job_id)
    assert trained is not None and trained.metadata["skipped"].value == "merge-only job"  # nothing trained
    assert not story.workspace.stage_dir(job_id, "adapter").exists()
    sources = [record.data["source"] for record in merged.metadata["sources"].records]  # the UI's table
    assert sorted(sources) == ["story-c-logic", "story-c-safety"], sources
    config = merged.metadata["config"].value
    assert config["parameters"]["normalize"] is True and config["random_seed"] == 0
    assert [m["parameters"]["density"] for m in config["models"]] == [0.7, 0.7]

    published = outcome.published or {}
    assert published["artifact"] == "merged_model"
    assert not [stage for stage in WEIGHT_STAGES if story.workspace.stage_dir(job_id, stage).exists()]
    model_dir = story.drops.registry / published["tag"]  # the node keeps no copy; the tag's root loads
    files = {record.data["file"]: record.data["sha256"] for record in merged.metadata["files"].records}
    assert sha256_file(model_dir / "model.safetensors") == files["model.safetensors"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    asked = [{"role": "user", "content": "Pip is red. Is Pip red?"}]  # in the template the model ships with
    inputs = tokenizer.apply_chat_template(
        asked, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > inputs["input_ids"].shape[1]

    trail = story.workspace.audit_path(job_id).read_text()
    assert '"story-c-logic"' in trail and '"story-c-safety"' in trail
    _assert_sources_sat_the_exam(story, job_id)

    # the auditor's report of a merge-only job: training_skipped is its training record, not a missing adapter
    materializations, checks = job_event_log(story.instance, job_id)
    report = build_report(
        job_id,
        manifest=story.workspace.load(job_id),
        trail_path=story.workspace.audit_path(job_id),
        materializations=materializations,
        checks=checks,
    )
    assert report.ok, report.problems
    assert "training skipped (merge-only job)" in report.to_markdown()


def _assert_sources_sat_the_exam(story: Story, job_id: str) -> None:
    """Each source job's adapter was scored on the base as its own side: its numbers are in the report, the exam's
    metadata (each on its own and in the table), the check's `had_to_beat` and the `exam_verdict` record."""
    report = json.loads(story.workspace.exam_report_path(job_id).read_text())
    jobs = ["story-c-logic", "story-c-safety"]
    assert [s["job_id"] for s in report["sources"]] == jobs and report["source_retention"] == 0.9
    assert all(s["seconds"] > 0 and Path(s["adapter_dir"]).is_absolute() for s in report["sources"])
    exam = _latest(story.instance, "exam_report", job_id)
    assert exam is not None
    table = {record.data["name"]: record.data for record in exam.metadata["metrics"].records}
    for row in report["metrics"][:3]:  # heldout_loss, logic_score, safety_rate
        assert sorted(row["sources"]) == jobs
        for job in jobs:
            assert exam.metadata[f"{row['name']}_source_{job}"].value == row["sources"][job]
            assert table[row["name"]][f"source_{job}"] == row["sources"][job]
    assert "keep 90% of the best merge source's gated rates (jobs 'story-c-logic', 'story-c-safety')" in (
        exam.metadata["had_to_beat"].value
    )
    verdict = next(
        r for r in AuditTrail(story.workspace.audit_path(job_id)).records() if r["event"] == "exam_verdict"
    )
    assert verdict["data"]["sources"] == report["sources"] and verdict["data"]["source_retention"] == 0.9


def test_merge_job_whose_gate_fails_publishes_nothing(story: Story) -> None:
    path = story.merge_job("story-c-gated", gate=["logic_score", "safety_rate"], min_safety_improvement=0.99)
    outcome = story.run(path)
    assert not outcome.success
    assert "exam_report_passes_gate" in outcome.reason and "safety_rate" in outcome.reason
    assert _latest(story.instance, "merged_model", "story-c-gated") is not None
    assert _latest(story.instance, "published_artifact", "story-c-gated") is None
    assert not (story.drops.registry / "v0.1.0-story-c-gated").exists()


def test_merge_job_with_a_missing_source_fails_before_merging(story: Story) -> None:
    document = yaml.safe_load(story.drops.merge.read_text())
    document["job_id"] = "story-c-ghost"
    document["merge"]["sources"].append({"job": "no-such-job"})
    path = story.drops.merge.parent / "ghost.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    outcome = story.run(path)
    assert not outcome.success
    assert "merged_model" in outcome.failed_steps[0]
    assert "'no-such-job' does not exist" in outcome.reason
    assert not story.workspace.stage_dir("story-c-ghost", "merged").exists()
    assert '"merge_refused"' in story.workspace.audit_path("story-c-ghost").read_text()


def test_merge_job_refuses_a_source_whose_registry_copy_was_tampered_with(story: Story) -> None:
    weights = story.drops.registry / "v0.1.0-story-c-logic" / "adapter_model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-8] + b"tampered")
    try:
        outcome = story.run(story.merge_job("story-c-tampered"))
    finally:
        weights.write_bytes(original)
    assert not outcome.success
    assert "merged_model" in outcome.failed_steps[0]
    assert "'story-c-logic': its published adapter could not be fetched" in outcome.reason
    assert "adapter_model.safetensors" in outcome.reason
    assert "'story-c-safety'" not in outcome.reason
    assert not story.workspace.stage_dir("story-c-tampered", "sources").joinpath("story-c-logic").exists()
    assert not story.workspace.source_dir("story-c-tampered", "story-c-safety").exists(), (
        "fetched, then dropped"
    )
    assert not story.workspace.stage_dir("story-c-tampered", "merged").exists()
    assert '"merge_refused"' in story.workspace.audit_path("story-c-tampered").read_text()
