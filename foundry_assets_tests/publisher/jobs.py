"""A publish job without Dagster (its trail holds what the stages record) and the `Registry` a notebook would pass:
shared by the publisher's stage and fault-injection tests."""

import shutil
from pathlib import Path
from typing import Any

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.hashing import sha256_tree, tree_digest
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher import (
    DeliveryResult,
    PublishJobResult,
    PublishResult,
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
    """One job's workspace and trail as the stages leave them: its adapter and merged model folders (stand-in bytes,
    or copies of the real folders `adapter_from`/`merged_from`) with their `adapter_saved` and `merged` records."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        method: str = "lora",
        base_model: str = "tiny",
        adapter_from: Path | None = None,
        merged_from: Path | None = None,
    ) -> None:
        self.workspace = Workspace(tmp_path / "foundry")
        self.registry = tmp_path / "registry"
        self.manifest = TrainingManifest.model_validate(
            {
                "job_id": JOB,
                "base_model": base_model,
                "method_config": {"type": method},
                "publish_target": {"registry": str(self.registry), "tag": "v1"},
            }
        )
        self.trail = AuditTrail(self.workspace.audit_path(JOB))
        self.audit(Event.JOB_ACCEPTED, lot_number=LOT, dataset_sha256="2" * 64, manifest_sha256="3" * 64)
        adapter, merged = self.workspace.adapter_dir(JOB), self.workspace.merged_dir(JOB)
        for folder, source, stand_in in (
            (adapter, adapter_from, ("adapter_model.safetensors", b"weights")),
            (merged, merged_from, ("model.safetensors", b"merged weights")),
        ):
            if source is None:
                folder.mkdir(parents=True)
                (folder / stand_in[0]).write_bytes(stand_in[1])
            else:
                shutil.copytree(source, folder)
        self.audit(Event.ADAPTER_SAVED, files=sha256_tree(adapter))  # what the stages record as they save
        self.audit(Event.MERGED, files=sha256_tree(merged))
        self.merged = MergedModel(LOT, merged, "tiny", "fold", "cpu", "float32", adapter_dir=adapter)

    def audit(self, event: str, **data: Any) -> str:
        return str(self.trail.append(event, job_id=JOB, **data)["sha256"])

    def exam(self, *, passed: bool = True, lot: str = LOT, recorded: bool | None = None) -> ExamResult:
        """The exam's stored result; its verdict is recorded as `recorded` (default: as stored) with the digest of
        the merged folder it examined."""
        reasons = [] if passed else ["heldout_loss did not improve"]
        examined = tree_digest(sha256_tree(self.merged.model_dir))
        verdict = passed if recorded is None else recorded
        self.audit(Event.EXAM_VERDICT, passed=verdict, reasons=reasons, lot_number=lot, model_sha256=examined)
        report = {"passed": passed, "reasons": reasons, "gate": ["heldout_loss"]}
        return ExamResult(lot, JOB, report, "", self.workspace.exam_report_path(JOB), model_sha256=examined)

    def publish(self, exam: ExamResult, registry: Any = None, audit: Any = None) -> PublishJobResult:
        return publish_job(
            self.manifest,
            exam,
            self.merged,
            self.workspace,
            self.trail,
            registry or LocalRegistry(),
            audit or self.audit,
        )

    def events(self) -> list[str]:
        return [r["event"] for r in self.trail.records()]
