"""The `foundry` console script: exit 0 on success, 2 on invalid input, 1 when the job fails; one-line reasons."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundry_assets.cli import main

REFERENCE = Path(__file__).parents[1] / "examples" / "reference-manifest.yaml"


def test_validate_accepts_the_reference_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REFERENCE)]) == 0
    assert "train-prod-2025-01-15" in capsys.readouterr().out


def test_validate_rejects_with_exit_2_and_a_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(REFERENCE.read_text())
    doc["job_id"] = "bad/id"
    doc["method_config"]["rank"] = 0
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    assert main(["validate", str(tmp_path / "m.yaml")]) == 2
    first, *details = capsys.readouterr().err.splitlines()
    assert first.startswith("foundry: ") and "2 problem(s) in job_id, method_config.rank" in first
    assert any(line.strip().startswith("job_id:") for line in details)


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "TrainingManifest" and "method_config" in schema["properties"]


def test_run_with_missing_data_is_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    doc = yaml.safe_load(REFERENCE.read_text())
    doc["data"] = {"path": "missing.jsonl"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "m.yaml")]) == 2
    assert "data.path" in capsys.readouterr().err


def test_run_refuses_data_outside_the_manifest_folder_before_registering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data.path: /proc/self/environ` was copied (AWS secret and all) into the job folder: now exit 2, nothing
    registered, the reason naming data.path and the allow-list."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "foundry"))
    monkeypatch.delenv("FOUNDRY_DATA_ROOTS", raising=False)
    doc = yaml.safe_load(REFERENCE.read_text())
    doc["data"] = {"path": "/proc/self/environ"}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "m.yaml")]) == 2
    err = capsys.readouterr().err
    assert (
        "data.path '/proc/self/environ' is outside the manifest's folder" in err
        and "FOUNDRY_DATA_ROOTS" in err
    )
    assert not list((tmp_path / "foundry").rglob("*.yaml")), "nothing was registered"


def test_a_foundry_actor_without_a_name_is_invalid_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FOUNDRY_ACTOR", "service:")
    assert main(["schema"]) == 2
    assert "FOUNDRY_ACTOR='service:' names no actor" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "foundry"), "--help"], capture_output=True, text=True, check=True
    )
    assert "validate" in out.stdout and "audit" in out.stdout


@pytest.mark.slow
def test_run_with_failed_exam_exits_1_with_one_line_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundry_assets_tests.defs.conftest import make_drop

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "foundry"))
    drop = make_drop(tmp_path / "demo", "cli-fails", exam={"min_loss_improvement": 20.0})
    assert main(["run", str(drop.manifest_path)]) == 1
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("foundry: ")]
    assert len(ours) == 1 and "exam_report_passes_gate" in ours[0]  # Dagster's own run log goes to stderr too
    assert (tmp_path / "home").is_dir()  # the run is on the instance in DAGSTER_HOME, where `make ui` looks


def _foundry_run(manifest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`foundry run MANIFEST` as a user types it: the console script in a process of its own."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "foundry"), "run", str(manifest)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.mark.slow
def test_a_run_prints_its_summary_on_stdout_and_no_third_party_noise(tmp_path: Path) -> None:
    """stdout: the run, one line per stage with its duration, the published location; stderr: the run log without
    progress bars, the Trainer's log dicts, torch's _pytree notices or Unsloth's banner."""
    from foundry_assets_tests.defs.conftest import make_drop

    drop = make_drop(tmp_path / "demo", "cli-quiet", compute={"device": "cpu"})
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FOUNDRY_VERBOSE", "TQDM_DISABLE")},
        "DAGSTER_HOME": str(tmp_path / "home"),
        "FOUNDRY_HOME": str(tmp_path / "foundry"),
        "FOUNDRY_ACTOR": "user:Quality Alice",
    }
    done = _foundry_run(drop.manifest_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout.splitlines()
    assert out[0].startswith("run ") and out[-1].startswith("lot number: ")
    stages = [line.split()[0] for line in out if line.startswith("  ")]
    assert stages[:3] == ["raw_data", "curated_dataset", "trained_adapter"]
    assert (
        "note: no dagster-daemon was serving" in done.stderr
    )  # none ran: the command started one for itself
    assert (
        "published_artifact" in stages and "published_artifact_published_artifact_audit_consistent" in stages
    )
    assert "foundry: warning" not in done.stderr  # the audit check after publishing agreed
    assert "Unsloth" not in done.stdout
    for noise in ("it/s]", "examples/s]", "{'loss'", "_pytree", "PreviewWarning"):
        assert noise not in done.stderr, noise
    assert "step 10/40: loss" in done.stderr  # the training's progress, from the run log

    # the same command again: the lot is published and its registry copy verifies, so nothing is run or recorded
    trail = tmp_path / "foundry" / "audit" / "cli-quiet.jsonl"
    records = trail.read_text().splitlines()
    launcher = {
        "kind": "user",
        "name": "Quality Alice",
        "run_id": out[0].split()[1],
    }  # the run's foundry/actor tag
    assert [json.loads(line)["event"] for line in records if json.loads(line)["actor"] != launcher] == []
    again = _foundry_run(drop.manifest_path, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "this lot is already published" in again.stdout and "nothing to run" in again.stdout
    assert again.stdout.splitlines()[-1] == out[-1]  # the same lot number
    assert trail.read_text().splitlines() == records


def test_drops_lists_what_the_sensor_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundry_assets.intake.drops import DropRef
    from foundry_assets.intake.ledger import DropLedger

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["drops"]) == 0 and "no drops" in capsys.readouterr().out
    ledger = DropLedger()
    ledger.mark(DropRef("good", "/in/good", "f1"), "requested", job_id="good", run_key="good@0123")
    ledger.mark(DropRef("bad", "/in/bad", "f2"), "invalid", reason="data.path 'x.jsonl' is not in the drop")
    dagster = [str(Path(sys.executable).with_name("dagster")), "sensor"]
    target = ["-w", "foundry_assets/workspace.yaml"]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for command in (["start", "drop_sensor"], ["cursor", "drop_sensor", "--set", ledger.dumps()]):
        subprocess.run(
            [*dagster, *command, *target],
            env=env,
            check=True,
            capture_output=True,
            cwd=Path(__file__).parents[1],
        )
    assert main(["drops", "--invalid-exit"]) == 2
    out = capsys.readouterr().out
    assert "good: requested as job good (run key good@0123)" in out
    assert "bad: invalid: data.path 'x.jsonl' is not in the drop" in out


def test_demo_refuses_a_pretrained_base_without_story_c_and_a_folder_not_pretrained_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["demo", "--pretrained", "--root", str(tmp_path)]) == 2
    assert "--pretrained and --base go with --story c" in capsys.readouterr().err
    assert main(["demo", "--story", "c", "--base", str(tmp_path), "--root", str(tmp_path / "r")]) == 2
    assert f"--base {tmp_path} has no foundry_pretrained.json" in capsys.readouterr().err
