"""Published tags are what the Hugging Face ecosystem loads as they are (issue 14's Done-when).

On a real Dagster instance, four jobs publish to a local registry and to a live S3 server (moto): an adapter job
(LoRA), a DoRA job (`artifact: auto`, so its merged 16-bit weights), a DoRA job publishing its adapter, and a
merge-only job (DARE-TIES of the LoRA and DoRA adapters, fetched from the registry). Each tag is then taken as a user
takes it (the folder, or every object under the S3 prefix downloaded with boto3) and loaded from its root in a fresh
process by `benchmarks/load_tag.py`, which uses transformers, peft and huggingface_hub only: the model card's metadata
and model-index must match the tag's exam report, and greedy generation from the tag's own chat template must stop
at the end-of-turn token.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from foundry_assets.definitions import build_definitions
from foundry_assets.demo.stories import (
    HARM_VERBS,
    logic_records,
    safety_records,
    story_corpus,
    story_manifest,
    write_drop,
)
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.runner import run_manifest
from foundry_assets.workspace import Workspace

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
BUCKET = "hub-tags"
LOGIC_PROMPT = "Pip is not red. Is Pip red?"
SAFETY_PROMPT = "Tell me how to build a bomb."


@dataclass
class Published:
    """The registry's tags, each downloaded as a user would, with what the job's manifest said."""

    folders: dict[str, Path]
    manifests: dict[str, dict[str, Any]]
    base_dir: Path


def _manifests(root: Path, model_dir: Path, registry: str) -> dict[str, Path]:
    """The four jobs' drops: logic (LoRA adapter), safety (DoRA adapter), logic again as a DoRA job under
    `artifact: auto` (the merged model), and the merge-only job of the first two."""

    def job(job_id: str, records: list[dict[str, str]], **sections: Any) -> Path:
        document = story_manifest(job_id, model_dir, Path(), **sections)
        document["publish_target"]["registry"] = registry
        return write_drop(root, job_id, records, document)

    gate = {"gate": ["heldout_loss"]}
    return {
        "adapter": job("hub-lora", logic_records(), method_config={"type": "lora"}, exam=gate),
        "dora_adapter": job(
            "hub-dora-adapter", safety_records(), publish_target={"artifact": "adapter"}, exam=gate
        ),
        "dora": job("hub-dora", logic_records(), exam=gate),
        "merge": job(
            "hub-merge",
            logic_records(count=40, offset=200) + safety_records(HARM_VERBS[-3:]),
            method_config={"max_steps": 1},
            data={"test_fraction": 0.8},
            merge={
                "sources": [
                    {"job": "hub-lora", "weight": 1.0, "density": 0.7},
                    {"job": "hub-dora-adapter", "weight": 1.0, "density": 0.7},
                ],
                "include_own_adapter": False,
                "normalize": True,
                "seed": 0,
            },
            exam=gate,
        ),
    }


def _download(client: Any, prefix: str, dest: Path) -> Path:
    """Every object under `prefix` into `dest`, as `aws s3 cp --recursive` would."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            target = dest / item["Key"].removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, item["Key"], str(target))
    return dest


@pytest.fixture(scope="module", params=["local", "s3"])
def published(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Published]:
    root = tmp_path_factory.mktemp(f"hub-{request.param}")
    model_dir = build_tiny_llama(root / "models" / "tiny-llama-story", corpus=story_corpus())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOUNDRY_HOME", str(root / "foundry"))
        server = client = None
        if request.param == "s3":
            from foundry_assets_tests.publisher.conftest import (
                ACCESS_KEY,
                SECRET_KEY,
                make_client,
                start_moto,
            )

            for name, value in (
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                ("AWS_REGION", "us-east-1"),
                ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials"),
            ):
                mp.setenv(name, value)
            server = start_moto()
            port = server.get_host_and_port()[1]
            mp.setenv("FOUNDRY_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
            client = make_client(port)
            client.create_bucket(Bucket=BUCKET)
        registry = f"s3://{BUCKET}/models" if client else str(root / "registry")
        paths = _manifests(root, model_dir, registry)
        (root / "dagster_home").mkdir()
        folders: dict[str, Path] = {}
        with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
            definitions = build_definitions()  # after the S3 settings, as a code location reads them
            for kind, path in paths.items():
                outcome = run_manifest(
                    path, instance=instance, workspace=Workspace(root / "foundry"), definitions=definitions
                )
                assert outcome.success, f"{kind}: {outcome.reason}"
                tag = (outcome.published or {})["tag"]
                folders[kind] = (
                    _download(client, f"models/{tag}/", root / "downloads" / tag)
                    if client
                    else root / "registry" / tag
                )
        if server is not None:
            server.stop()
        manifests = {kind: yaml.safe_load(path.read_text()) for kind, path in paths.items()}
        yield Published(folders, manifests, model_dir)


def _load(tag: Path, base: Path, prompt: str) -> dict[str, Any]:
    """benchmarks/load_tag.py on `tag` in a fresh process: its one JSON line."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "load_tag.py"),
            str(tag),
            "--base",
            str(base),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "40",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EXPECTED = {
    # kind: (loaded as, library_name, base_model_relation, prompt)
    "adapter": ("PeftModel.from_pretrained(base, TAG)", "peft", "adapter", LOGIC_PROMPT),
    "dora_adapter": ("PeftModel.from_pretrained(base, TAG)", "peft", "adapter", SAFETY_PROMPT),
    "dora": ("AutoModelForCausalLM.from_pretrained(TAG)", "transformers", "finetune", LOGIC_PROMPT),
    "merge": ("AutoModelForCausalLM.from_pretrained(TAG)", "transformers", "merge", LOGIC_PROMPT),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_each_tag_loads_from_its_root_and_stops_at_eos(published: Published, kind: str) -> None:
    how, library, relation, prompt = EXPECTED[kind]
    tag = published.folders[kind]
    loaded = _load(tag, published.base_dir, prompt)

    assert loaded["loaded_as"] == how
    card = loaded["card"]
    assert card["library_name"] == library and card["base_model_relation"] == relation
    assert card["base_model"] == published.manifests[kind]["base_model"]
    assert card["pipeline_tag"] == "text-generation" and card["license"]
    # the card's model-index is the exam's candidate value of every metric it scored
    report = json.loads((tag / "exam_report.json").read_text())
    scored = {row["name"]: row["candidate"] for row in report["metrics"] if row.get("candidate") is not None}
    assert {m["metric"]: m["value"] for m in card["model_index"]} == pytest.approx(scored)
    assert report["passed"] is True
    # the model answers in the format it was trained in and ends its turn
    assert loaded["stopped_at_eos"], loaded
    assert 0 < loaded["new_tokens"] < 40 and loaded["text"].strip(), loaded
    if kind == "adapter":
        config = json.loads((tag / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == published.manifests[kind]["base_model"]
