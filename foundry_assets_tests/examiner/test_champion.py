"""Champion/challenger on real tiny models: the candidate must beat the base and be at least as good as the current
release; the champion is fetched from a registry (a tag, or a job's latest `published` record) and verified first."""

import json
import shutil
from pathlib import Path

import pytest

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.errors import ExamError, FoundryError
from foundry_assets.examiner.champion import Champion, resolve_champion
from foundry_assets.examiner.exam import examine
from foundry_assets.examiner.items import ExamItems
from foundry_assets.manifest import ExamConfig, TrainingManifest
from foundry_assets.publisher import fetch_artifact, push_artifact
from foundry_assets.workspace import Workspace
from foundry_assets_tests.adapters import make_adapter
from foundry_assets_tests.examiner.texts import TEST, TRAIN_TEXTS

pytestmark = pytest.mark.slow
ITEMS = ExamItems(TRAIN_TEXTS, TEST)
LOT = "c0ffee" * 10 + "abcd"


def _champion(model_dir: Path) -> Champion:
    return Champion(model_dir, False, "v1.0.0", "file:///registry/v1.0.0", LOT, job_id="support-v1")


def test_candidate_that_beats_the_base_but_not_the_champion_fails_naming_the_champion_and_metric(
    tiny_model_dir: Path, trained_dir: Path, barely_trained_dir: Path
) -> None:
    report = examine(
        tiny_model_dir,
        barely_trained_dir,
        ITEMS,
        ExamConfig(gate=["heldout_loss"]),
        champion=_champion(trained_dir),
    )
    loss = report.metric("heldout_loss")
    assert loss.candidate < loss.baseline and loss.champion < loss.candidate  # type: ignore[operator]
    assert (loss.baseline_result, loss.champion_result, loss.result) == ("pass", "FAIL", "FAIL")
    assert loss.required.startswith("< ") and loss.champion_required == f"≤ {loss.champion:.4f}"
    assert not report.passed and len(report.reasons) == 1
    reason = report.reasons[0]
    assert reason.startswith(
        f"heldout_loss {loss.candidate:.4f} beats the base model but is not as good as the "
    )
    assert "champion job 'support-v1' (tag 'v1.0.0', lot c0ffeec0ffee…)" in reason
    assert (
        report.champion is not None
        and report.champion["lot_number"] == LOT
        and report.champion["seconds"] > 0
    )
    markdown = report.to_markdown()
    assert "had to beat the base model (baseline) and the champion job 'support-v1'" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| heldout_loss"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "heldout_loss",
        f"{loss.baseline:.4f}",
        f"{loss.champion:.4f}",
        f"{loss.candidate:.4f}",
        f"{loss.required}: pass",
        f"{loss.champion_required}: FAIL",
        "FAIL",
    ]


def test_candidate_that_beats_base_and_champion_passes_and_the_margin_is_applied(
    tiny_model_dir: Path, trained_dir: Path, barely_trained_dir: Path
) -> None:
    champion = _champion(barely_trained_dir)
    report = examine(tiny_model_dir, trained_dir, ITEMS, ExamConfig(gate=["heldout_loss"]), champion=champion)
    assert report.passed, report.reasons
    loss = report.metric("heldout_loss")
    assert (loss.baseline_result, loss.champion_result, loss.result) == ("pass", "pass", "pass")
    assert loss.candidate < loss.champion < loss.baseline  # type: ignore[operator]
    # the champion itself is "at least as good as the champion" (margin 0), but not better by a margin
    config = ExamConfig(gate=["heldout_loss"], max_eval_items=3)
    assert examine(tiny_model_dir, trained_dir, ITEMS, config, champion=_champion(trained_dir)).passed
    config = config.model_copy(update={"champion_margin": 0.01})
    refused = examine(tiny_model_dir, trained_dir, ITEMS, config, champion=_champion(trained_dir))
    assert not refused.passed and "exam.champion_margin 0.01" in refused.reasons[0]
    assert refused.metric("heldout_loss").baseline_result == "pass"


def _manifest(tmp_path: Path, champion: dict[str, str], model_dir: Path) -> TrainingManifest:
    return TrainingManifest.model_validate(
        {
            "job_id": "candidate",
            "base_model": "foundry-demo/tiny",
            "model_path": str(model_dir),
            "method_config": {"type": "lora"},
            "publish_target": {"registry": str(tmp_path / "registry"), "tag": "v2.0.0"},
            "exam": {"gate": ["heldout_loss"], "champion": champion},
        }
    )


@pytest.fixture(scope="module")
def adapter_tag(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """A registry holding tag v1.0.0: a LoRA adapter of the tiny model at its root and its exam report (the lot)."""
    root = tmp_path_factory.mktemp("champion-registry")
    staging = make_adapter(tiny_model_dir, root / "staging", seed=3, scale=0.3)
    config = json.loads((staging / "adapter_config.json").read_text())
    (staging / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "foundry-demo/tiny"})
    )
    (staging / "exam_report.json").write_text(json.dumps({"lot_number": LOT, "passed": True}))
    published = push_artifact(staging, "v1.0.0", registry=str(root / "registry"))
    return root, dict(published.files)


def test_adapter_tag_champion_is_fetched_verified_and_scored_on_the_base(
    tiny_model_dir: Path, trained_dir: Path, adapter_tag: tuple[Path, dict[str, str]]
) -> None:
    root, files = adapter_tag
    manifest = _manifest(root, {"tag": "v1.0.0"}, tiny_model_dir)
    workspace = Workspace(root / "foundry")
    champion = resolve_champion(
        manifest, workspace, trail_for=lambda _: AuditTrail(root / "none.jsonl"), fetch=fetch_artifact
    )
    assert champion is not None and champion.adapter and champion.files == files
    assert champion.lot_number == LOT and champion.model_dir == workspace.champion_dir("candidate")
    assert champion.label == f"champion tag 'v1.0.0' at {champion.uri} (lot c0ffeec0ffee…)"
    report = examine(tiny_model_dir, trained_dir, ITEMS, manifest.exam, champion=champion)
    loss = report.metric("heldout_loss")
    assert loss.champion is not None and loss.champion != pytest.approx(
        loss.baseline
    )  # the adapter was applied
    assert report.champion is not None and report.champion["artifact"] == "adapter"


def test_unverifiable_champion_is_an_error_naming_it_and_leaves_nothing(
    tiny_model_dir: Path, adapter_tag: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, files = adapter_tag
    registry = tmp_path / "registry"
    shutil.copytree(root / "registry", registry)
    weights = registry / "v1.0.0" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    workspace = Workspace(tmp_path / "foundry")
    trails = tmp_path / "audit"

    def resolve(champion: dict[str, str]) -> Champion | None:
        return resolve_champion(
            _manifest(tmp_path, champion, tiny_model_dir),
            workspace,
            trail_for=lambda job: AuditTrail(trails / f"{job}.jsonl"),
            fetch=fetch_artifact,
        )

    with pytest.raises(
        ExamError, match=r"exam.champion tag 'v1.0.0' in .* could not be fetched and verified"
    ) as info:
        resolve({"tag": "v1.0.0"})
    assert "adapter_model.safetensors" in str(info.value) and isinstance(info.value, FoundryError)
    assert not workspace.champion_dir("candidate").exists()

    with pytest.raises(ExamError, match=r"exam.champion job 'support-v1' is unknown: it has no audit trail"):
        resolve({"job": "support-v1"})
    trail = AuditTrail(trails / "support-v1.jsonl")
    trail.append(Event.EXAM_VERDICT, job_id="support-v1", passed=True, lot_number=LOT)
    with pytest.raises(
        ExamError, match=r"exam.champion job 'support-v1' has no release: no published record"
    ):
        resolve({"job": "support-v1"})
    # a job champion's tag must hold what its `published` record names: here, the untampered files
    trail.append(
        Event.PUBLISHED,
        job_id="support-v1",
        registry=str(registry),
        tag="v1.0.0",
        uri=(registry / "v1.0.0").resolve().as_uri(),
        files=files,
        lot_number=LOT,
        artifact="adapter",
    )
    with pytest.raises(
        ExamError, match=r"exam.champion job 'support-v1' could not be fetched and verified"
    ) as info:
        resolve({"job": "support-v1"})
    assert "fetch step 'verify'" in str(info.value) and "adapter_model.safetensors" in str(info.value)
    assert not workspace.champion_dir("candidate").exists()

    shutil.copy2(root / "registry" / "v1.0.0" / "adapter_model.safetensors", weights)  # restored: it verifies
    champion = resolve({"job": "support-v1"})
    assert champion is not None and champion.job_id == "support-v1" and champion.lot_number == LOT
    assert champion.label == "champion job 'support-v1' (tag 'v1.0.0', lot c0ffeec0ffee…)"
