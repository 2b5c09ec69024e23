"""`publish_job` without Dagster: the gate, the publish to a local registry, the node cleanup and the re-verify."""

from pathlib import Path

import pytest

from foundry_assets.audit_events import Event
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher import (
    PublishJobError,
    announce,
)
from foundry_assets_tests.publisher.jobs import JOB, LOT, Job, LocalRegistry


def test_a_failed_exam_is_refused_and_recorded(tmp_path: Path) -> None:
    job = Job(tmp_path)
    with pytest.raises(PublishJobError, match="did not pass; nothing is published: heldout_loss") as info:
        job.publish(job.exam(passed=False))
    assert not info.value.allow_retries
    assert job.events()[-1] == Event.PUBLISH_REFUSED and not job.registry.exists()


def test_an_exam_of_another_lot_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    with pytest.raises(PublishJobError, match="different lots") as info:
        job.publish(job.exam(lot="2" * 64))
    assert info.value.allow_retries, "a re-run of the exam can fix it"
    assert job.events()[-1] == Event.EXAM_VERDICT


def test_publish_records_then_removes_the_weights_and_a_rerun_reverifies(tmp_path: Path) -> None:
    job = Job(tmp_path)
    exam = job.exam()
    published = job.publish(exam)
    artifact = published.artifact
    assert (artifact.status, artifact.artifact, artifact.lot_number) == ("published", "adapter", LOT)
    assert (job.registry / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert job.events()[-2:] == [Event.PUBLISHED, Event.NODE_WEIGHTS_REMOVED]
    assert published.audit_head == job.trail.records()[-1]["sha256"]
    assert not job.workspace.adapter_dir(JOB).exists() and artifact.weights_removed["bytes_freed"] > 0
    assert announce(job.manifest, published, LocalRegistry(), job.audit) is None, "no notice asked for"

    before = job.events()
    again = job.publish(exam)  # the weights are gone: the registry copy is verified against the record
    assert again.artifact.status == "unchanged" and again.artifact.files == artifact.files
    assert job.events() == before, "a re-run of a published lot records nothing new"
    assert again.audit_head == job.trail.records()[-1]["sha256"]


def test_a_rerun_that_rebuilt_the_weights_is_a_no_op_keeping_the_published_copy(tmp_path: Path) -> None:
    """A plain re-run of a published job retrains (other bytes: training is not bit-reproducible); the publish step
    keeps the verified registry copy as the job's artifact and exits cleanly, recording nothing new."""
    job = Job(tmp_path)
    first = job.publish(job.exam())
    assert job.trail.records()[-2]["event"] == Event.PUBLISHED
    for folder, data in (
        (job.workspace.adapter_dir(JOB), b"rebuilt"),
        (job.workspace.merged_dir(JOB), b"m2"),
    ):
        folder.mkdir(parents=True)  # the re-run's training and merge, recorded as the stages record them
        (folder / "weights.safetensors").write_bytes(data)
    job.audit(Event.ADAPTER_SAVED, files=sha256_tree(job.workspace.adapter_dir(JOB)))
    job.audit(Event.MERGED, files=sha256_tree(job.workspace.merged_dir(JOB)))
    again = job.publish(job.exam())
    assert again.artifact.files == first.artifact.files and again.artifact.status == "unchanged"
    assert [r["event"] for r in job.trail.records()].count(Event.PUBLISHED) == 1
    assert not job.workspace.adapter_dir(JOB).exists(), "the rebuilt weights leave the node too"
    assert (job.registry / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize(
    ("method", "artifact", "published"),
    [
        ("lora", "auto", "adapter"),
        ("qlora", "auto", "adapter"),
        ("orpo", "auto", "adapter"),
        ("dora", "auto", "merged_model"),
        ("dora", "adapter", "adapter"),
        ("lora", "merged_model", "merged_model"),
    ],
)
def test_auto_publishes_what_vllm_can_serve(
    tmp_path: Path, method: str, artifact: str, published: str
) -> None:
    """vLLM and TGI load LoRA adapters but not DoRA ones: `auto` publishes a DoRA job's merged 16-bit model; an explicit
    `artifact` is published as asked. The weights are the tag's root files, beside the publisher's four."""
    job = Job(tmp_path, method=method)
    target = job.manifest.publish_target.model_copy(update={"artifact": artifact})
    job.manifest = job.manifest.model_copy(update={"publish_target": target})
    result = job.publish(job.exam()).artifact
    weights = "model.safetensors" if published == "merged_model" else "adapter_model.safetensors"
    assert result.artifact == published and job.trail.records()[-2]["data"]["artifact"] == published
    assert sorted(result.files) == sorted(["README.md", "exam_report.json", "manifest.yaml", weights])


def test_a_stored_passed_exam_is_not_trusted_over_the_trail(tmp_path: Path) -> None:
    """Flipping `passed` in the stored exam result (a file under DAGSTER_HOME) publishes nothing: the trail says
    the exam failed."""
    job = Job(tmp_path)
    with pytest.raises(PublishJobError, match=r"latest exam verdict \(record #\d+\) failed"):
        job.publish(job.exam(passed=True, recorded=False))
    assert job.events()[-1] == Event.PUBLISH_REFUSED and not job.registry.exists()


@pytest.mark.parametrize("folder", ["adapter_dir", "merged_dir"])
def test_weights_changed_after_the_exam_are_not_published(tmp_path: Path, folder: str) -> None:
    job = Job(tmp_path)
    if folder == "merged_dir":
        job.manifest = job.manifest.model_copy(
            update={
                "publish_target": job.manifest.publish_target.model_copy(update={"artifact": "merged_model"})
            }
        )
    exam = job.exam()
    weights = next(getattr(job.workspace, folder)(JOB).glob("*.safetensors"))
    weights.write_bytes(b"swapped after the exam")
    with pytest.raises(PublishJobError, match=r"differ from record #.*changed on disk"):
        job.publish(exam)
    assert job.events()[-1] == Event.PUBLISH_REFUSED and not job.registry.exists()


def test_an_exam_of_other_weights_than_the_merge_is_refused(tmp_path: Path) -> None:
    job = Job(tmp_path)
    exam = job.exam()
    job.audit(Event.MERGED, files={"model.safetensors": "0" * 64})  # merged again after the exam
    job.audit(Event.EXAM_VERDICT, passed=True, reasons=[], lot_number=LOT, model_sha256=exam.model_sha256)
    with pytest.raises(PublishJobError, match="not those of merge record"):
        job.publish(exam)
