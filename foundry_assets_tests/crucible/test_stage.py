"""The Train stage's rules (`crucible.train_job`) without Dagster and without training: the merge-only skip, the
pre-flight's record, and the resume decision made once and handed to the training process."""

from pathlib import Path
from typing import Any

import pytest
import torch

from foundry_assets.audit_events import Event
from foundry_assets.crucible import stage as stage_module
from foundry_assets.crucible import train_job
from foundry_assets.crucible.checkpoints import LOT_FILE, PreparedCheckpoints
from foundry_assets.crucible.result import TrainResult
from foundry_assets.errors import HardwareIncompatibleError
from foundry_assets.fsio import write_json, write_jsonl
from foundry_assets.manifest import TrainingManifest, parse_manifest
from foundry_assets.stages import CuratedDataset
from foundry_assets.workspace import Workspace

from .conftest import qa

JOB = "job-train"


def manifest(model_path: Path | None = None, **sections: dict[str, Any]) -> TrainingManifest:
    """A lora job on the CPU; `model_path` (the tiny Llama) is what the pre-flight sizes the job from."""
    document: dict[str, Any] = {
        "job_id": JOB,
        "base_model": "tiny-llama",
        **({"model_path": str(model_path)} if model_path else {}),
        "method_config": {"type": "lora", "max_steps": 20, "checkpoint_steps": 4},
        "publish_target": {"registry": "/tmp/registry", "tag": "v1"},
        "compute": {"device": "cpu"},
        **sections,
    }
    return parse_manifest(document)


class Trail:
    """An `on_event` that keeps (event, data) and returns a head that counts the records."""

    def __init__(self) -> None:
        self.records: list[tuple[Event, dict[str, Any]]] = []

    def __call__(self, event: Event, **data: Any) -> str:
        self.records.append((event, data))
        return f"head-{len(self.records)}"

    @property
    def events(self) -> list[Event]:
        return [event for event, _ in self.records]


@pytest.fixture
def curated(tmp_path: Path) -> CuratedDataset:
    train = tmp_path / "train.jsonl"
    write_jsonl(train, [qa(1)])
    return CuratedDataset(lot_number="lot-A", train_path=train, test_path=train, data_format="sft")


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stands in for the training process: records what it was handed, logs two losses, saves nothing real."""
    seen: dict[str, Any] = {}

    def fake_training(*, on_log: Any, **kwargs: Any) -> TrainResult:
        seen.update(kwargs)
        for step in (10, 20):
            on_log(step, 1.0 / step)
        return TrainResult(
            backend="peft",
            device="cpu",
            steps=20,
            losses=[(10, 0.1), (20, 0.05)],
            adapter_dir=kwargs["out_dir"],
            files={"adapter_model.safetensors": "0" * 64},
            trainable_params=8,
            changed_params=8,
            runtime_s=1.0,
            gradient_checkpointing=False,
        )

    monkeypatch.setattr(stage_module, "train_adapter_isolated", fake_training)
    return seen


def test_a_merge_only_job_trains_nothing(tmp_path: Path, curated: CuratedDataset) -> None:
    trail = Trail()
    merge = {"merge": {"include_own_adapter": False, "sources": [{"job": "other-job"}]}}
    outcome = train_job(manifest(**merge), curated, Workspace(tmp_path / "ws"), trail)
    assert trail.events == [Event.TRAINING_SKIPPED]
    assert outcome.run is None and outcome.adapter.skipped and outcome.audit_head == "head-1"
    assert outcome.adapter.lot_number == "lot-A" and outcome.adapter.model_path == "tiny-llama"
    assert not (tmp_path / "ws").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a host with no CUDA device")
def test_a_refused_preflight_is_recorded_and_raised(
    tmp_path: Path, tiny_model_dir: Path, curated: CuratedDataset
) -> None:
    trail = Trail()
    refused = manifest(tiny_model_dir, compute={"device": "cuda"})
    with pytest.raises(HardwareIncompatibleError, match="device='cuda'"):
        train_job(refused, curated, Workspace(tmp_path), trail)
    assert trail.events == [Event.PREFLIGHT_FAILED]


def test_the_resume_decision_is_made_once_and_handed_to_training(
    tmp_path: Path, tiny_model_dir: Path, curated: CuratedDataset, handed: dict[str, Any]
) -> None:
    workspace = Workspace(tmp_path)
    folder = workspace.checkpoints_dir(JOB)
    write_json(folder / LOT_FILE, {"lot_number": "lot-A"})
    for name in ("trainer_state.json", "adapter_model.safetensors"):
        (folder / "checkpoint-4").mkdir(exist_ok=True)
        (folder / "checkpoint-4" / name).write_text("{}")
    trail = Trail()
    outcome = train_job(manifest(tiny_model_dir), curated, workspace, trail)

    prepared = handed["checkpoints"]
    assert isinstance(prepared, PreparedCheckpoints)
    assert prepared.resume is not None and prepared.resume.step == 4
    assert trail.events == [
        Event.PREFLIGHT_PASSED,
        Event.TRAINING_RESUMED,
        Event.TRAINING_LOSS,
        Event.TRAINING_LOSS,
        Event.ADAPTER_SAVED,
    ]
    assert trail.records[1][1] == {"from_step": 4, "checkpoint": str(folder / "checkpoint-4")}
    assert [data["step"] for event, data in trail.records if event == Event.TRAINING_LOSS] == [10, 20]
    saved = trail.records[-1][1]
    assert saved["adapter_dir"] == str(workspace.adapter_dir(JOB)) and "losses" not in saved
    assert outcome.audit_head == "head-5" and outcome.run is not None
    assert outcome.adapter.adapter_dir == workspace.adapter_dir(JOB) and outcome.adapter.backend == "peft"
    assert handed["params"].max_steps == 20 and handed["train_examples"][0]["prompt"] == qa(1)["prompt"]


def test_another_lots_checkpoints_are_discarded_and_training_starts_at_zero(
    tmp_path: Path, tiny_model_dir: Path, curated: CuratedDataset, handed: dict[str, Any]
) -> None:
    workspace = Workspace(tmp_path)
    folder = workspace.checkpoints_dir(JOB)
    write_json(folder / LOT_FILE, {"lot_number": "lot-B"})
    (folder / "checkpoint-4").mkdir()
    trail = Trail()
    train_job(manifest(tiny_model_dir), curated, workspace, trail)

    assert handed["checkpoints"].resume is None
    event, data = trail.records[1]
    assert event == Event.TRAINING_STARTED and data["checkpoint_steps"] == 4
    assert "lot-B" in data["discarded"] and "lot-A" in data["discarded"]
    assert not (folder / "checkpoint-4").exists()


def test_without_checkpoints_training_starts_with_none(
    tmp_path: Path, tiny_model_dir: Path, curated: CuratedDataset, handed: dict[str, Any]
) -> None:
    trail = Trail()
    plain = manifest(tiny_model_dir, method_config={"type": "lora"})
    train_job(plain, curated, Workspace(tmp_path), trail)
    assert handed["checkpoints"] is None
    assert trail.records[1] == (Event.TRAINING_STARTED, {"checkpoint_steps": 0})
