"""The six stages as a notebook runs them: each stage's entry point in turn, handing on its typed result, with no
Dagster imported at all (the domain code holds every stage rule; the assets only wire it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOK = r"""
import json, sys
from pathlib import Path

from foundry_assets.alchemist.stage import merge_job
from foundry_assets.audit import AuditTrail, verify_audit_log
from foundry_assets.audit_events import Event
from foundry_assets.crucible.stage import train_job
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.stage import curate
from foundry_assets.demo.drop import write_demo_drop
from foundry_assets.examiner.stage import examine_job
from foundry_assets.intake.stage import snapshot_drop
from foundry_assets.manifest import load_manifest
from foundry_assets.publisher import fetch_artifact, notify_deployment, publish_job, push_artifact, verify_artifact
from foundry_assets.workspace import Workspace


class Registry:
    push, verify, notify = staticmethod(push_artifact), staticmethod(verify_artifact), staticmethod(notify_deployment)


root = Path(sys.argv[1])
manifest = load_manifest(write_demo_drop(root, job_id="notebook").manifest_path)
workspace = Workspace(root / "foundry")
workspace.register(manifest)
trail = AuditTrail(workspace.audit_path(manifest.job_id))


def audit(event, **data):
    return str(trail.append(event, job_id=manifest.job_id, **data)["sha256"])


raw = snapshot_drop(manifest, workspace)
audit(Event.JOB_ACCEPTED, lines=raw.lines, **raw.lot())
curation = curate(raw, manifest, workspace, MiniLMEmbedder())
curated = curation.dataset(raw.lot_number)
trained = train_job(manifest, curated, workspace, audit).adapter
merge = merge_job(
    manifest,
    trained,
    workspace,
    trail_for=lambda job: AuditTrail(workspace.audit_path(job)),
    recorded_lots={},
    fetch=fetch_artifact,
)
audit(Event.MERGED, **merge.merged_record())
exam = examine_job(manifest, curated, merge.model, workspace)
audit(Event.EXAM_VERDICT, **exam.verdict_record())
published = publish_job(manifest, exam, merge.model, workspace, trail, Registry(), audit).artifact
print(json.dumps({
    "lots": [raw.lot_number, curated.lot_number, trained.lot_number, merge.model.lot_number, exam.lot_number,
             published.lot_number],
    "kept": curation.kept, "adapter": sorted(trained.files), "method": merge.model.method, "passed": exam.passed,
    "report": exam.report_path.is_file(), "status": published.status, "uri": published.uri,
    "events": [r["event"] for r in trail.records()], "chain": verify_audit_log(trail.path).ok,
    "dagster": sorted(m for m in sys.modules if m == "dagster" or m.startswith("dagster.")),
}))
"""


@pytest.mark.slow
def test_the_six_stages_run_in_order_without_dagster(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dagster"] == []  # no stage imported Dagster, directly or through a library of ours
    assert (
        len(set(result["lots"])) == 1 and len(result["lots"][0]) == 64
    )  # one lot number, raw data to registry
    assert result["kept"] > 0 and "adapter_model.safetensors" in result["adapter"]
    assert (result["method"], result["passed"], result["report"]) == ("fold", True, True)
    assert result["status"] == "published" and result["uri"].startswith("file://")
    assert result["chain"]
    assert result["events"][:3] == ["job_accepted", "preflight_passed", "training_started"]
    assert result["events"][-4:] == ["exam_verdict", "publish_started", "published", "node_weights_removed"]
