"""`publish_job` without Dagster: the gate, the publish to a local registry, the node cleanup and the re-verify."""

from pathlib import Path
from typing import Any

import pytest

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher import (
    DeliveryResult,
    PublishJobError,
    PublishResult,
    announce,
    notify_deployment,
    publish_job,
    push_artifact,
    verify_artifact,
)
from foundry_assets.stages import ExamResult, MergedModel
from foundry_assets.workspace import Workspace

JOB, LOT = "job-p", "1" * 64


class LocalRegistry:
    """The `Registry` a notebook would pass: the publisher's functions, no Dagster resource."""

    def push(
        self, staging: Path, version_tag: str, *, registry: str, on_verified: Any = None
    ) -> PublishResult:
        return push_artifact(staging, version_tag, registry=registry, on_verified=on_verified)

    def verify(self, registry: str, tag: str, files: dict[str, str]) -> PublishResult:
        return verify_artifact(registry, tag, files)

    def notify(self, url: str, payload: dict[str, Any]) -> DeliveryResult:
        return notify_deployment(url, payload)


class Job:
    def __init__(self, tmp_path: Path) -> None:
        self.workspace = Workspace(tmp_path / "foundry")
        self.registry = tmp_path / "registry"
        self.manifest = TrainingManifest.model_validate(
            {
                "job_id": JOB,
                "base_model": "tiny",
                "method_config": {"type": "dora"},
                "publish_target": {"registry": str(self.registry), "tag": "v1"},
            }
        )
        self.trail = AuditTrail(self.workspace.audit_path(JOB))
        adapter = self.workspace.adapter_dir(JOB)
        adapter.mkdir(parents=True)
        (adapter / "adapter_model.safetensors").write_bytes(b"weights")
        self.merged = MergedModel(
            LOT, self.workspace.merged_dir(JOB), "tiny", "fold", "cpu", "float32", adapter_dir=adapter
        )

    def audit(self, event: str, **data: Any) -> str:
        return str(self.trail.append(event, job_id=JOB, **data)["sha256"])

    def exam(self, *, passed: bool = True, lot: str = LOT) -> ExamResult:
        reasons = [] if passed else ["heldout_loss did not improve"]
        self.audit(Event.EXAM_VERDICT, passed=passed, reasons=reasons, lot_number=lot)
        return ExamResult(
            lot, JOB, passed, reasons, ["heldout_loss"], {}, "", self.workspace.exam_report_path(JOB)
        )

    def publish(self, exam: ExamResult) -> Any:
        return publish_job(
            self.manifest, exam, self.merged, self.workspace, self.trail, LocalRegistry(), self.audit
        )

    def events(self) -> list[str]:
        return [r["event"] for r in self.trail.records()]


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
    assert job.events() == [Event.EXAM_VERDICT]


def test_publish_records_then_removes_the_weights_and_a_rerun_reverifies(tmp_path: Path) -> None:
    job = Job(tmp_path)
    exam = job.exam()
    published = job.publish(exam)
    artifact = published.artifact
    assert (artifact.status, artifact.artifact, artifact.lot_number) == ("published", "adapter", LOT)
    assert (job.registry / "v1" / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert job.events()[-2:] == [Event.PUBLISHED, Event.NODE_WEIGHTS_REMOVED]
    assert published.audit_head == job.trail.records()[-1]["sha256"]
    assert not job.workspace.adapter_dir(JOB).exists() and artifact.weights_removed["bytes_freed"] > 0
    assert announce(job.manifest, published, LocalRegistry(), job.audit) is None, "no notice asked for"

    again = job.publish(exam)  # the weights are gone: the registry copy is verified against the record
    assert again.artifact.status == "unchanged" and again.artifact.files == artifact.files
    assert job.events()[-1] == Event.PUBLISHED and again.audit_head == job.trail.records()[-1]["sha256"]
