"""compute.device reaches every model-touching stage: curation embeds and the exam loads where `resolve_device` says."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch
from transformers import AutoModelForCausalLM

from foundry_assets import devices
from foundry_assets.defs.examiner import exam_report
from foundry_assets.defs.resources import (
    AuditTrailResource,
    GpuResource,
    WorkspaceResource,
    publisher_resource_from_env,
)
from foundry_assets.manifest import load_manifest
from foundry_assets.runner import register_job
from foundry_assets.stages import CuratedDataset, ExamResult, MergedModel
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import curate_job, make_drop

pytestmark = pytest.mark.slow


class _Stop(Exception):
    """Raised by the spy model loader once it has recorded where the exam asked to load."""


def _metadata(instance: dg.DagsterInstance, asset: str, job_id: str) -> dict[str, Any]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[job_id]), limit=1
    ).records
    assert records and records[0].asset_materialization is not None, f"{asset} was not materialized"
    return {key: value.value for key, value in records[0].asset_materialization.metadata.items()}


def _exam(
    instance: dg.DagsterInstance,
    workspace: Workspace,
    job_id: str,
    curated: dg.ExecuteInProcessResult,
    base: str,
) -> dg.Output[ExamResult]:
    """The exam asset called directly on the curated split, with the base model as its own candidate."""
    raw = curated.asset_value("raw_data")
    output = exam_report(
        dg.build_asset_context(partition_key=job_id, instance=instance),
        curated_dataset=curated.asset_value("curated_dataset"),
        merged_model=MergedModel(
            lot_number=raw.lot_number,
            model_dir=Path(base),
            base_model=base,
            method="none",
            device="cpu",
            dtype="float32",
        ),
        workspace=WorkspaceResource(root=str(workspace.root)),
        audit_trail=AuditTrailResource(directory=str(workspace.root / "audit")),
        gpu=GpuResource(),
        publisher=publisher_resource_from_env(),
    )
    assert isinstance(output, dg.Output)
    return output


def test_curation_and_exam_record_the_cpu_when_compute_device_is_cpu(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    drop = make_drop(demo_root, "device-cpu", compute={"device": "cpu"})
    manifest = load_manifest(drop.manifest_path)
    register_job(manifest, instance, workspace)
    result = curate_job(instance, "device-cpu")
    curated = _metadata(instance, "curated_dataset", "device-cpu")
    assert (curated["device"], curated["device_name"]) == ("cpu", "cpu")

    output = _exam(instance, workspace, "device-cpu", result, manifest.model_path or manifest.base_model)
    exam = {key: getattr(value, "value", value) for key, value in output.metadata.items()}
    assert (exam["device"], exam["device_name"], exam["dtype"]) == ("cpu", "cpu", "float32")
    assert exam["baseline_seconds"] > 0 and exam["candidate_seconds"] > 0
    assert "scored on cpu in float32" in exam["report"]
    report = json.loads((workspace.stage_dir("device-cpu", "exam") / "exam_report.json").read_text())
    assert (report["device"], report["dtype"]) == ("cpu", "float32")


def test_curation_and_exam_run_on_the_device_resolve_device_returns(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a (pretend) GPU node, "auto" means CUDA for the embedder and for both exam models.

    The spies record the device each stage asked for and stop before CUDA is touched: MiniLM really embeds on the
    CPU, and the exam's model loader raises once it has been called.
    """
    import sentence_transformers

    drop = make_drop(demo_root, "device-auto", compute={"device": "auto"})
    manifest = load_manifest(drop.manifest_path)
    register_job(manifest, instance, workspace)
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setattr(devices, "device_name", lambda device: "Spy GPU" if device == "cuda" else "cpu")

    embedder_devices: list[str | None] = []
    real_sentence_transformer = sentence_transformers.SentenceTransformer

    def sentence_transformer(path: str, device: str | None = None, **kwargs: Any) -> Any:
        embedder_devices.append(device)
        return real_sentence_transformer(path, device="cpu", **kwargs)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", sentence_transformer)
    result = curate_job(instance, "device-auto")
    assert embedder_devices == ["cuda"]
    curated = _metadata(instance, "curated_dataset", "device-auto")
    assert (curated["device"], curated["device_name"]) == ("cuda", "Spy GPU")

    loads: list[dict[str, Any]] = []

    def from_pretrained(path: str, **kwargs: Any) -> None:
        loads.append({"path": path, **kwargs})
        raise _Stop(path)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    base = manifest.model_path or manifest.base_model
    with pytest.raises(_Stop):
        _exam(instance, workspace, "device-auto", result, base)
    assert [(load["path"], load["device_map"]) for load in loads] == [(str(base), "cuda")]
    assert loads[0]["dtype"] in (torch.bfloat16, torch.float16)


def test_exam_on_a_cuda_manifest_without_a_gpu_fails_without_retries(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = make_drop(demo_root, "device-cuda", compute={"device": "cuda"})
    manifest = load_manifest(drop.manifest_path)
    register_job(manifest, instance, workspace)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    base = manifest.model_path or manifest.base_model
    with pytest.raises(dg.Failure, match=r"exam: compute\.device is 'cuda'") as info:
        exam_report(
            dg.build_asset_context(partition_key="device-cuda", instance=instance),
            curated_dataset=CuratedDataset("0" * 64, Path("unused"), Path("unused"), "sft"),
            merged_model=MergedModel("0" * 64, Path(base), base, "none", "cpu", "float32"),
            workspace=WorkspaceResource(root=str(workspace.root)),
            audit_trail=AuditTrailResource(directory=str(workspace.root / "audit")),
            gpu=GpuResource(),
            publisher=publisher_resource_from_env(),
        )
    assert info.value.allow_retries is False
