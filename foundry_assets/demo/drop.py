"""The bundled demo drop: synthetic instruction data with planted near-duplicates, and a manifest for it."""

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.fsio import write_text

WORDS = [
    "apple",
    "river",
    "candle",
    "silver",
    "garden",
    "window",
    "pocket",
    "ladder",
    "button",
    "mirror",
    "island",
    "rocket",
    "violin",
    "pencil",
    "forest",
    "harbor",
    "lantern",
    "meadow",
    "castle",
    "bridge",
    "cactus",
    "dragon",
    "engine",
    "falcon",
    "glacier",
    "hammer",
    "jungle",
    "kettle",
    "lemon",
    "magnet",
    "needle",
    "orchid",
    "parrot",
    "quartz",
    "ribbon",
    "saddle",
    "tunnel",
    "umbrella",
    "valley",
    "walnut",
    "yogurt",
    "zipper",
    "anchor",
    "basket",
    "cookie",
    "dolphin",
    "feather",
    "goblet",
    "helmet",
    "insect",
    "jacket",
    "koala",
    "lizard",
    "mango",
    "nutmeg",
    "oyster",
    "pepper",
    "rabbit",
    "spider",
    "tomato",
    "vessel",
    "wizard",
    "marble",
    "copper",
    "desert",
    "stream",
    "thunder",
    "canyon",
    "pillow",
]


def demo_records(seed: int = 0) -> list[dict[str, str]]:
    """Short, distinct instruction records from four task families (each under 13 words, so no n-gram leaks)."""
    rng = random.Random(seed)
    records: list[dict[str, str]] = []
    pairs = rng.sample([(a, b) for a in range(2, 60) for b in range(2, 60)], 70)
    records += [
        {"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."} for a, b in pairs
    ]
    records += [{"instruction": f"Spell {w} backwards.", "output": w[::-1]} for w in WORDS]
    records += [{"instruction": f"Write {w} in capital letters.", "output": w.upper()} for w in WORDS]
    records += [
        {"instruction": f"What number comes after {n}?", "output": f"After {n} comes {n + 1}."}
        for n in rng.sample(range(100, 999), 40)
    ]
    rng.shuffle(records)
    return records


def plant_near_duplicates(records: list[dict[str, str]], count: int, seed: int = 0) -> list[dict[str, str]]:
    """Re-insert `count` records with case or punctuation edits (cosine > 0.95 under MiniLM) at random places."""
    rng = random.Random(seed + 1)
    out = list(records)
    for original in rng.sample(records, count):
        copy = dict(original)
        if rng.random() < 0.5:
            copy["instruction"] = copy["instruction"].lower()
        else:
            copy["instruction"] = copy["instruction"].rstrip("?.") + " ?"
        out.insert(rng.randrange(out.index(original) + 1, len(out) + 1), copy)
    return out


@dataclass(frozen=True)
class DemoDrop:
    manifest_path: Path
    data_path: Path
    model_dir: Path
    registry: Path
    planted_duplicates: int


def write_demo_drop(root: str | Path, *, job_id: str | None = None, duplicates: int = 24) -> DemoDrop:
    """Build the tiny model (once) and a fresh drop: `root/drops/<job_id>/{data.jsonl,manifest.yaml}`."""
    root = Path(root).resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    job_id = job_id or f"demo-{stamp}"
    records = plant_near_duplicates(demo_records(), duplicates)
    model_dir = build_tiny_llama(
        root / "models" / "tiny-llama", corpus=[f"{r['instruction']} {r['output']}" for r in records]
    )
    drop = root / "drops" / job_id
    drop.mkdir(parents=True, exist_ok=True)
    data = drop / "data.jsonl"
    write_text(data, "".join(json.dumps(r) + "\n" for r in records))
    manifest = {
        "job_id": job_id,
        "base_model": "foundry-demo/tiny-llama",
        "model_path": str(model_dir),
        "method_config": {
            "type": "dora",
            "rank": 8,
            "learning_rate": 0.005,
            "max_steps": 40,
            "max_seq_length": 64,
            "logging_steps": 10,
        },
        "publish_target": {"registry": str(root / "registry"), "tag": f"v0.1.0-{job_id}"},
        "compute": {"batch_size": 8, "grad_accum": 1, "device": "auto"},
        "data": {"path": "data.jsonl", "test_fraction": 0.15},
        "exam": {"max_contamination": 0.0, "min_loss_improvement": 0.25},
    }
    manifest_path = drop / "manifest.yaml"
    write_text(manifest_path, yaml.safe_dump(manifest, sort_keys=False))
    return DemoDrop(manifest_path, data, model_dir, root / "registry", duplicates)
