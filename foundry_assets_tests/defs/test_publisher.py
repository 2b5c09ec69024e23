"""Publishing through Dagster to a live S3 server (moto on loopback) with a deployment notice to a local webhook."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from foundry_assets.audit import AuditTrail
from foundry_assets.definitions import build_definitions
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace
from foundry_assets_tests.defs.conftest import make_drop
from foundry_assets_tests.publisher.conftest import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.slow


@pytest.fixture
def s3(live_s3: Any) -> Any:
    live_s3.create_bucket(Bucket="coreason-models")
    return live_s3


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/deploy", received
    server.shutdown()
    server.server_close()


def test_publish_to_s3_verifies_and_notifies_without_leaking_credentials(
    demo_root: Path,
    workspace: Workspace,
    instance: dg.DagsterInstance,
    s3: Any,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    drop = make_drop(
        demo_root,
        "job-s3",
        publish_target={
            "registry": "s3://coreason-models/prod",
            "trigger_deployment": True,
            "webhook_url": url,
        },
    )
    # S3 settings are read when the Definitions are built (as when a code location loads)
    outcome = run_manifest(
        drop.manifest_path, instance=instance, workspace=workspace, definitions=build_definitions()
    )
    assert outcome.success, outcome.reason
    published = outcome.published or {}
    tag = published["tag"]
    assert published["uri"] == f"s3://coreason-models/prod/{tag}/"
    listed = s3.list_objects_v2(Bucket="coreason-models", Prefix=f"prod/{tag}/")["Contents"]
    keys = {o["Key"].removeprefix(f"prod/{tag}/") for o in listed}
    assert {"MANIFEST.sha256", "README.md", "manifest.yaml", "exam_report.json"} <= keys
    assert {"config.json", "model.safetensors"} <= keys, "a DoRA job's merged model, at the tag's root"
    for name, digest in published["files"].items():
        head = s3.head_object(Bucket="coreason-models", Key=f"prod/{tag}/{name}")
        assert head["Metadata"]["sha256"] == digest
    assert not (workspace.stage_dir("job-s3", "staging") / tag).exists()
    # the card's recipe names the stack and device the trail says trained the adapter
    saved = next(
        r for r in AuditTrail(workspace.audit_path("job-s3")).records() if r["event"] == "adapter_saved"
    )
    card = s3.get_object(Bucket="coreason-models", Key=f"prod/{tag}/README.md")["Body"].read().decode()
    stack = "Unsloth" if saved["data"]["backend"] == "unsloth" else "PEFT + TRL, without Unsloth"
    assert f"| trained with | {stack} on {saved['data']['device_name']} |" in card

    assert len(received) == 1
    assert received[0]["tag"] == tag and received[0]["lot_number"] == outcome.lot_number

    logs = "\n".join(str(record) for record in instance.all_logs(outcome.run_id))
    assert SECRET_KEY not in logs and ACCESS_KEY not in logs
    assert SECRET_KEY not in workspace.audit_path("job-s3").read_text()
