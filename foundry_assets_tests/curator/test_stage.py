"""`curate`, the stage's entry point: the manifest's curation, data and exam sections reach the curation, the outputs
land in the job's curated folder, and the result becomes the typed CuratedDataset."""

import json
from pathlib import Path

import yaml

from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.pipeline import curate_drop
from foundry_assets.curator.stage import curate
from foundry_assets.manifest import TrainingManifest
from foundry_assets.stages import RawData
from foundry_assets.workspace import Workspace
from foundry_assets_tests.curator.synthetic import TOPICS

REFERENCE = Path(__file__).parents[2] / "examples" / "reference-manifest.yaml"


def test_curate_reads_the_manifest_sections_and_writes_the_job_folder(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    rows = [
        {"instruction": f"Tell me about {t}.", "output": f"Here is a short explanation of {t}."}
        for t in TOPICS
    ]
    rows.append({"instruction": f"Tell me about {TOPICS[0]}!", "output": rows[0]["output"]})  # a near-copy
    drop = tmp_path / "drop.jsonl"
    drop.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    document = yaml.safe_load(REFERENCE.read_text())
    manifest = TrainingManifest.model_validate(
        {
            **document,
            "job_id": "prune",
            "method_config": {"type": "lora"},
            "curation": {"similarity_threshold": 0.9, "keep": "hard", "decontaminate_train": True},
            "data": {"test_fraction": 0.25, "split_seed": 3},
            "exam": {"ngram_size": 5},
        }
    )
    raw = RawData("prune", drop, len(rows), "sft", "lot-1", "d" * 64, "m" * 64)
    workspace = Workspace(tmp_path / "foundry")

    result = curate(raw, manifest, workspace, embedder)

    assert (result.train_path, result.test_path) == (
        workspace.train_split("prune"),
        workspace.test_split("prune"),
    )
    assert (result.threshold, result.keep_policy, result.removed) == (0.9, "hard", 1)
    assert result.overlap is not None and result.overlap.n == 5
    assert result.embedded_new == len(rows) and any(workspace.embedding_cache_dir().iterdir())
    explicit = curate_drop(
        drop,
        tmp_path / "explicit",
        data_format="sft",
        embedder=embedder,
        threshold=0.9,
        keep="hard",
        decontaminate_train=True,
        test_fraction=0.25,
        split_seed=3,
        ngram_n=5,
    )
    assert (explicit.train_sha256, explicit.test_sha256) == (result.train_sha256, result.test_sha256)
    dataset = result.dataset(raw.lot_number)
    assert (dataset.lot_number, dataset.train_path, dataset.test_path) == (
        "lot-1",
        result.train_path,
        result.test_path,
    )
    assert dataset.data_format == "sft" and dataset.counts == result.to_metadata()
