"""A minimal drop folder (manifest.yaml and a small JSONL file) and an empty workspace, without the demo model."""

import json
from pathlib import Path

import pytest
import yaml

from foundry_assets.workspace import Workspace

RECORDS = [{"instruction": "Say a.", "output": "a"}, {"instruction": "Say b.", "output": "b"}]


def write_drop(folder: Path, job_id: str, **manifest: object) -> Path:
    """`folder` holding `manifest.yaml` for `job_id` (sections replaced by `manifest`) and its `data.jsonl`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    document = {
        "job_id": job_id,
        "base_model": "base",
        "method_config": {"type": "lora"},
        "publish_target": {"registry": "registry", "tag": "v1"},
        "data": {"path": "data.jsonl"},
        **manifest,
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "workspace")
