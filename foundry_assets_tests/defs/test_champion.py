"""Champion/challenger on a real Dagster instance: a challenger that beats the base but not the current release of its
line is refused by the blocking gate and publishes nothing; the gate names the champion it had to beat."""

import json
from pathlib import Path

import dagster as dg
import pytest

from foundry_assets.demo.stories import logic_records, story_corpus, story_manifest, write_drop
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace

pytestmark = pytest.mark.slow


def _logic_job(root: Path, job_id: str, steps: int, **exam: object) -> Path:
    model_dir = build_tiny_llama(root / "models" / "tiny-llama-story", corpus=story_corpus())
    manifest = story_manifest(
        job_id,
        model_dir,
        root / "registry",
        method_config={"type": "lora", "max_steps": steps},
        exam={"gate": ["heldout_loss"], **exam},
    )
    return write_drop(root, job_id, logic_records(count=120), manifest)


def test_a_challenger_that_beats_the_base_but_not_the_champion_publishes_nothing(
    demo_root: Path, workspace: Workspace, instance: dg.DagsterInstance
) -> None:
    champion = run_manifest(_logic_job(demo_root, "line-v1", 120), instance=instance, workspace=workspace)
    assert champion.success, champion.reason
    champion_tag = (champion.published or {})["tag"]

    # a few steps on the same data: better than the random base, worse than the released model
    path = _logic_job(demo_root, "line-v2", 3, champion={"job": "line-v1"}, min_loss_improvement=0.0)
    challenger = run_manifest(path, instance=instance, workspace=workspace)
    assert not challenger.success
    assert "exam_report_passes_gate" in challenger.reason
    assert not (demo_root / "registry" / "v0.1.0-line-v2").exists()

    report = json.loads((workspace.stage_dir("line-v2", "exam") / "exam_report.json").read_text())
    loss = next(r for r in report["metrics"] if r["name"] == "heldout_loss")
    assert loss["candidate"] < loss["baseline"], "the challenger beats the base model"
    assert loss["result"] == "FAIL"
    reason = next(r for r in report["reasons"] if r.startswith("heldout_loss"))
    assert "champion job 'line-v1'" in reason and champion_tag in reason, reason
    # nothing of the champion's weights is left on the node after the exam
    assert not workspace.champion_dir("line-v2").exists()
