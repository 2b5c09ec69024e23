"""The auditor's report: every link cross-checked between the audit trail and the Dagster event log."""

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from foundry_assets.actor import Actor, current_actor
from foundry_assets.audit import AuditTrail
from foundry_assets.audit_checks import GATE_CHECK
from foundry_assets.audit_events import Event
from foundry_assets.audit_report import build_report
from foundry_assets.cli import main
from foundry_assets.hashing import sha256_text
from foundry_assets.manifest import TrainingManifest
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop
from foundry_assets_tests.test_audit import write_legacy_trail

LOT = "1" * 64
ADAPTER = {"adapter_model.safetensors": "a" * 64, "adapter_config.json": "b" * 64}
MANIFEST = TrainingManifest.model_validate(
    {
        "job_id": "job-x",
        "base_model": "tiny",
        "method_config": {"type": "dora"},
        "publish_target": {"registry": "s3://models/prod", "tag": "v1"},
    }
)


def chain(
    tmp_path: Path, *, passed: bool = True
) -> tuple[Path, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """A consistent synthetic chain: the trail as the assets write it, and the event log as they record it (with
    `passed=False`, an exam that failed and a publish that went ahead anyway, both witnesses agreeing)."""
    trail = AuditTrail(tmp_path / "job-x.jsonl")
    manifest_hash = sha256_text(MANIFEST.canonical_json())
    counts: dict[str, Any] = {"rows_in": 10, "kept": 8, "removed": 2, "train_rows": 7, "test_rows": 1}
    counts |= {"train_sha256": "c" * 64, "test_sha256": "d" * 64}
    metrics = [{"name": "heldout_loss", "baseline": 6.0, "candidate": 5.0, "required": "< 6", "passed": True}]
    metrics[0]["sources"] = {
        "logic-1": 5.5
    }  # a merge source's value, as a merge of source jobs' exam writes it
    publish = {"uri": "s3://models/prod/v1/", "tag": "v1", "status": "published", "artifact_sha256": "e" * 64}
    manifest_doc = MANIFEST.model_dump(mode="json")
    lot = {"dataset_sha256": "f" * 64, "manifest_sha256": manifest_hash, "lot_number": LOT}
    heads = {"raw_data": trail.append("job_accepted", job_id="job-x", manifest=manifest_doc, **lot)["sha256"]}
    heads["curated_dataset"] = trail.append("data_curated", job_id="job-x", **counts)["sha256"]
    trail.append("preflight_passed", job_id="job-x", device="cpu")
    for step, loss in ((10, 6.5), (20, 5.25)):
        trail.append("training_loss", job_id="job-x", step=step, loss=loss)
    trained = {"backend": "peft", "device": "cpu", "steps": 20, "final_loss": 5.25, "files": ADAPTER}
    heads["trained_adapter"] = trail.append("adapter_saved", job_id="job-x", **trained)["sha256"]
    sources = [{"name": "job-x", "weight": 1.0, "density": 0.5, "path": "/a", "sha256": ADAPTER}]
    merged = {"method": "fold", "sources": sources, "files": {"model.safetensors": "9" * 64}}
    heads["merged_model"] = trail.append("merged", job_id="job-x", **merged)["sha256"]
    report = {"metrics": metrics}
    heads["exam_report"] = trail.append(
        "exam_verdict", job_id="job-x", passed=passed, reasons=[], report=report, lot_number=LOT
    )["sha256"]
    files = {"adapter/adapter_model.safetensors": "a" * 64}
    heads["published_artifact"] = trail.append(
        "published", job_id="job-x", files=files, lot_number=LOT, **publish
    )["sha256"]

    metadata: dict[str, dict[str, Any]] = {
        "raw_data": {**lot, "method": "dora", "base_model": "tiny"},
        "curated_dataset": {"lot_number": LOT, **counts},
        "trained_adapter": {
            **{k: v for k, v in trained.items() if k != "final_loss"},
            "lot_number": LOT,
            "final_loss": 5.25,
            "losses": [{"step": 10, "loss": 6.5}, {"step": 20, "loss": 5.25}],
        },
        "merged_model": {"lot_number": LOT, "method": "fold", "files": merged["files"]},
        "exam_report": {"lot_number": LOT, "passed": passed, "reasons": []},
        "published_artifact": {"lot_number": LOT, "files": files, **publish},
    }
    metadata["merged_model"]["sources"] = [{"source": "job-x", "weight": 1.0, "density": 0.5}]
    events = {
        asset: {"run_id": "r" * 36, "metadata": {**m, "audit_head": heads[asset]}}
        for asset, m in metadata.items()
    }
    check_meta = {"lot_number": LOT, "heldout_loss_baseline": 6.0, "heldout_loss_candidate": 5.0}
    check_meta["heldout_loss_source_logic-1"] = 5.5
    checks = {GATE_CHECK: {"passed": passed, "metadata": check_meta}}
    return trail.path, events, checks


def report_of(path: Path, events: dict[str, Any], checks: dict[str, Any]) -> Any:
    return build_report("job-x", manifest=MANIFEST, trail_path=path, materializations=events, checks=checks)


def test_consistent_chain_is_complete_in_markdown_and_html(tmp_path: Path) -> None:
    report = report_of(*chain(tmp_path))
    assert report.ok, report.problems
    markdown = report.to_markdown()
    assert "complete and consistent" in markdown
    for text in (
        LOT,
        "peft",
        "[[10, 6.5], [20, 5.25]]",
        "s3://models/prod/v1/",
        "heldout_loss_candidate",
        "fold",
    ):
        assert text in markdown
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and LOT in page and "<table>" in page


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (
            lambda e, c: e["merged_model"]["metadata"].update(lot_number="2" * 64),
            "lot number of merged_model: MISMATCH",
        ),
        (
            lambda e, c: e["trained_adapter"]["metadata"].update(
                files={**ADAPTER, "adapter_model.safetensors": "0" * 64}
            ),
            "adapter files: MISMATCH (differ: adapter_model.safetensors)",
        ),
        (
            lambda e, c: e["exam_report"]["metadata"].update(audit_head="0" * 64),
            "exam_report: MISSING (audit_head not found",
        ),
        (lambda e, c: e.pop("published_artifact"), "published_artifact: MISSING (no materialization"),
        (
            lambda e, c: c[GATE_CHECK]["metadata"].update(heldout_loss_candidate=4.0),
            "heldout_loss_candidate (required < 6): MISMATCH",
        ),
        (
            lambda e, c: c[GATE_CHECK]["metadata"].update({"heldout_loss_source_logic-1": 4.0}),
            "heldout_loss_source_logic-1: MISMATCH",
        ),
        (
            lambda e, c: e["trained_adapter"]["metadata"].update(losses=[{"step": 10, "loss": 6.5}]),
            "loss curve (step, loss): MISMATCH",
        ),
    ],
    ids=["lot", "adapter-hash", "audit-head", "unpublished", "exam-number", "source-number", "loss-curve"],
)
def test_any_disagreement_or_missing_link_is_flagged(tmp_path: Path, tamper: Any, expected: str) -> None:
    path, events, checks = chain(tmp_path)
    tamper(events, checks)
    report = report_of(path, events, checks)
    assert not report.ok
    assert any(expected in problem for problem in report.problems), report.problems
    page = report.to_html()
    assert "⚠" in report.to_markdown() and ("class='mismatch'" in page or "class='missing'" in page)


def test_a_publish_after_a_failed_exam_is_flagged(tmp_path: Path) -> None:
    clean = report_of(*chain(tmp_path / "clean"))
    gate = [i for s in clean.sections for i in s.items if i.label.startswith("published #9")]
    assert clean.ok and [(i.trail, i.status) for i in gate] == [
        (f"exam_verdict #8 of lot {LOT[:12]}… passed", "ok")
    ]

    report = report_of(*chain(tmp_path / "failed", passed=False))
    assert not report.ok
    assert report.problems == [
        f"The audit trail on its own · published #9 follows a passed exam of its lot: MISMATCH (the latest exam_verdict of lot "
        f"{LOT[:12]}… before it (#8) failed)"
    ]


def test_a_publish_with_no_exam_of_its_lot_is_flagged(tmp_path: Path) -> None:
    path, events, checks = chain(tmp_path)
    AuditTrail(path).append(Event.PUBLISHED, job_id="job-x", lot_number="2" * 64, tag="v1")
    assert report_of(path, events, checks).problems == [
        "The audit trail on its own · published #10 follows a passed exam of its lot: MISSING (no exam_verdict of lot 222222222222… "
        "before it)"
    ]


def test_a_repaired_trail_shows_the_torn_write_and_its_evidence(tmp_path: Path) -> None:
    path, events, checks = chain(tmp_path)
    torn = b'{"data":{"url"'  # a notice cut off by a full disk
    with path.open("ab") as handle:
        handle.write(torn)
    AuditTrail(path).append(Event.DEPLOYMENT_NOTIFIED, job_id="job-x", status=200)
    report = report_of(path, events, checks)
    assert report.ok, report.problems
    sidecar = next(tmp_path.glob("job-x.jsonl.torn-*"))
    assert f"| torn write fenced at #10 | 14 bytes, sha256 {hashlib.sha256(torn).hexdigest()[:16]}" in (
        report.to_markdown()
    )
    assert f"info: a write was cut off here (a full disk?); its bytes are kept in {sidecar.name}" in (
        report.to_markdown()
    )

    orphan = tmp_path / "job-x.jsonl.torn-11-000000000000"  # a repair cut off before its record
    orphan.write_bytes(b"{")
    assert (
        "| torn bytes in job-x.jsonl.torn-11-000000000000 | — | — | — | info: no trail_repaired record names"
        in (report_of(path, events, checks).to_markdown())
    )
    orphan.unlink()

    sidecar.write_bytes(b"something else")
    assert report_of(path, events, checks).problems == [
        f"The audit trail on its own · torn write fenced at #10: MISMATCH ({sidecar.name} no longer holds the torn bytes)"
    ]
    sidecar.unlink()
    assert report_of(path, events, checks).problems == [
        f"The audit trail on its own · torn write fenced at #10: MISSING ({sidecar.name}, which kept the torn bytes, is gone)"
    ]


def test_the_report_shows_who_did_what_and_why_and_older_records_as_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "job-x.jsonl"
    write_legacy_trail(path, [(Event.JOB_ACCEPTED, {"lot_number": LOT}), (Event.DATA_CURATED, {})])
    trail = AuditTrail(path)
    sensor = Actor("sensor", "drop_sensor", "0123456789abcdef")
    for step in (10, 20, 30):
        trail.append(Event.TRAINING_LOSS, job_id="job-x", actor=sensor, step=step, loss=1.0)
    trail.append(
        Event.PUBLISHED, job_id="job-x", actor=Actor("user", "Dr. Q"), reason="approved after review"
    )
    trail.append(Event.NODE_WEIGHTS_REMOVED, job_id="job-x", actor=sensor)
    report = build_report("job-x", manifest=MANIFEST, trail_path=path, materializations={}, checks={})
    [section] = [s for s in report.sections if s.title.startswith("Who did what")]
    assert [(item.label, item.trail.split(" · ", 1)[1], item.note) for item in section.items] == [
        ("#1 job_accepted", "(not recorded)", ""),
        ("#2 data_curated", "(not recorded)", ""),
        ("#3–#5 training_loss ×3", "sensor drop_sensor · run 01234567", ""),
        ("#6 published", "user Dr. Q", "why: approved after review"),
        ("#7 node_weights_removed", "sensor drop_sensor · run 01234567", ""),
    ]
    assert "| #6 published | " in report.to_markdown() and "why: approved after review" in report.to_html()


def test_an_edited_trail_breaks_the_chain(tmp_path: Path) -> None:
    path, events, checks = chain(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"kept":8', '"kept":9')
    path.write_text("\n".join(lines) + "\n")
    report = report_of(path, events, checks)
    assert any(
        problem.startswith("Audit trail and event log · hash chain: MISMATCH") for problem in report.problems
    )


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.mark.slow
def test_cli_reports_the_demo_job_complete_then_catches_a_truncated_trail(
    demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "foundry_assets" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("FOUNDRY_HOME", raising=False)
    workspace = Workspace(home / "foundry")
    drop = make_drop(demo_root, "job-audited")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        outcome = run_manifest(drop.manifest_path, instance=instance, workspace=workspace)
    assert outcome.success, outcome.reason

    assert main(["audit", "report", "job-audited"]) == 0
    markdown = capsys.readouterr().out
    assert "complete and consistent" in markdown and str(outcome.lot_number) in markdown
    launcher = f"{current_actor().kind} {current_actor().name} · run {outcome.run_id[:8]}"
    assert launcher in markdown and "(not recorded)" not in markdown  # who ran each step
    assert main(["audit", "report", "job-audited", "--html", "-o", str(tmp_path / "report.html")]) == 0
    assert str(outcome.lot_number) in (tmp_path / "report.html").read_text()

    # Cut the trail's last record (the node cleanup after the publish): the published asset's audit_head no longer is
    # in the trail.
    trail = workspace.audit_path("job-audited")
    records = trail.read_text().splitlines()
    last = json.loads(records[-1])
    assert last["event"] == "node_weights_removed"
    trail.write_text("\n".join(records[:-1]) + "\n")
    capsys.readouterr()
    assert main(["audit", "report", "job-audited"]) == 1
    captured = capsys.readouterr()
    assert "published_artifact: MISSING (audit_head not found in trail)" in captured.out
    assert "problem(s)" in captured.err
    assert main(["audit", "report", "never-registered"]) == 2
