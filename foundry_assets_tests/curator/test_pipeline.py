"""Real MiniLM embeddings on tiny drops: planted near-duplicates go, distinct rows stay, curate_drop's files add up."""

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from foundry_assets import fsio
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.formats import text_for_embedding
from foundry_assets.curator.pipeline import curate_drop
from foundry_assets.curator.readers import read_jsonl
from foundry_assets.curator.semdedup import semdedup
from foundry_assets.errors import DataError

DISTINCT = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    (
        "Explain how photosynthesis converts sunlight into chemical energy in plants.",
        "Plants use chlorophyll to capture light and turn carbon dioxide and water into glucose and oxygen.",
    ),
    ("Describe the water cycle.", "Water evaporates, condenses into clouds and falls as rain."),
    ("Write a Python function that reverses a string.", "def reverse(s): return s[::-1]"),
    ("Write a Python function that reverses a list.", "def reverse(xs): return xs[::-1]"),
    ("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice in 1813."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Convert 100 degrees Celsius to Fahrenheit.", "100 degrees Celsius is 212 degrees Fahrenheit."),
    ("Give a synonym for happy.", "Joyful."),
    ("What does HTTP stand for?", "HTTP stands for Hypertext Transfer Protocol."),
    (
        "Summarise the plot of Hamlet in one sentence.",
        "A Danish prince avenges his father's murder at a tragic cost.",
    ),
]
# (source index in DISTINCT, near-copy): punctuation only, one word changed, contraction + reordered answer
PLANTED = [
    (
        2,
        (
            "Explain how photosynthesis converts sunlight into chemical energy in plants!",
            "Plants use chlorophyll to capture light, and turn carbon dioxide and water into glucose and oxygen.",
        ),
    ),
    (
        2,
        (
            "Explain how photosynthesis turns sunlight into chemical energy in plants.",
            "Plants use chlorophyll to capture light and turn carbon dioxide and water into glucose and oxygen.",
        ),
    ),
    (0, ("What's the capital of France?", "The capital of France is Paris.")),
]


def alpaca(q: str, a: str) -> dict[str, str]:
    return {"instruction": q, "output": a}


def write_drop(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def drop_rows() -> list[dict[str, Any]]:
    """Distinct rows with the planted copies after them; the copies sit on lines 14, 15, 16."""
    return [alpaca(q, a) for q, a in DISTINCT] + [alpaca(q, a) for _, (q, a) in PLANTED]


def test_embedder_gives_unit_float32_rows(embedder: MiniLMEmbedder) -> None:
    e = embedder.encode(["a cat sat on the mat", "ein Hund", "a cat sat on the mat"])
    assert e.dtype == np.float32 and e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert float(e[0] @ e[2]) == pytest.approx(1.0, abs=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    assert embedder.name == "all-MiniLM-L6-v2"


def test_planted_near_duplicates_are_removed_and_distinct_rows_kept(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    records = read_jsonl(write_drop(tmp_path / "drop.jsonl", drop_rows()))
    e = embedder.encode([text_for_embedding(r) for r in records])
    n = len(DISTINCT)
    for k, (src, _) in enumerate(PLANTED):
        assert float(e[n + k] @ e[src]) > 0.985  # measured 0.9959, 0.9879, 0.9937: planted clearly above 0.95
    distinct = e[:n] @ e[:n].T
    assert distinct[~np.eye(n, dtype=bool)].max() < 0.9  # measured max 0.84 (reverse a string / a list)
    result = semdedup(e, 0.95)
    assert result.kept == list(range(n))  # every distinct row stays; the earliest of each group survives
    assert [(r.index, r.kept_index) for r in result.removed] == [
        (n + k, src) for k, (src, _) in enumerate(PLANTED)
    ]


def test_curate_drop_counts_files_and_hashes(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    drop = write_drop(tmp_path / "drop.jsonl", drop_rows())
    result = curate_drop(
        drop, tmp_path / "out", data_format="sft", embedder=embedder, test_fraction=0.25, split_seed=1
    )
    assert result.rows_in == result.kept + result.removed == 15
    assert (result.kept, result.removed) == (12, 3)
    assert result.kept == result.train_rows + result.test_rows and result.test_rows == 3
    train = [json.loads(x) for x in result.train_path.read_text().splitlines()]
    test = [json.loads(x) for x in result.test_path.read_text().splitlines()]
    removed = [json.loads(x) for x in result.removed_path.read_text().splitlines()]
    assert (len(train), len(test)) == (result.train_rows, result.test_rows)
    assert sorted(r["source_line"] for r in train + test) == list(range(1, 13))
    assert all(
        set(r) == {"prompt", "completion", "source_line"} and r["prompt"][0]["role"] == "user" for r in train
    )
    assert [(r["line"], r["kept_line"]) for r in removed] == [(13, 3), (14, 3), (15, 1)]
    assert all(r["similarity"] > 0.95 for r in removed)
    assert result.train_sha256 == hashlib.sha256(result.train_path.read_bytes()).hexdigest()
    assert result.test_sha256 == hashlib.sha256(result.test_path.read_bytes()).hexdigest()
    assert result.removed_examples[0]["kept"].startswith("Explain how photosynthesis converts")
    meta = result.to_metadata()
    assert (
        json.loads(json.dumps(meta)) == meta
        and meta["rows_in"] == 15
        and meta["embedder"] == "all-MiniLM-L6-v2"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "contamination.jsonl",
        "quarantine.jsonl",
        "removed.jsonl",
        "test.jsonl",
        "train.jsonl",
    ]
    assert meta["rows_read"] == meta["quarantined"] + meta["removed"] + meta["kept"]
    assert "threshold" in meta["similarity_histogram_md"] and meta["nn_similarity_p99"] > 0.95
    # a rerun gives identical bytes
    again = curate_drop(
        drop, tmp_path / "out2", data_format="sft", embedder=embedder, test_fraction=0.25, split_seed=1
    )
    assert (again.train_sha256, again.test_sha256) == (result.train_sha256, result.test_sha256)


def test_curate_drop_preference_for_orpo(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    rows = [{"prompt": q, "chosen": a, "rejected": "I don't know."} for q, a in DISTINCT[:6]]
    result = curate_drop(
        write_drop(tmp_path / "p.jsonl", rows),
        tmp_path / "out",
        data_format="preference",
        embedder=embedder,
        test_fraction=0.2,
    )
    assert (result.rows_in, result.removed, result.train_rows, result.test_rows) == (6, 0, 5, 1)
    first = json.loads(result.train_path.read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected", "source_line"}
    assert result.removed_path.read_text() == ""


def test_unfit_shape_is_refused_before_anything_is_written(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    rows = [
        {"prompt": "Capital of Peru?", "chosen": "Lima.", "rejected": "Quito."},
        alpaca("Name a prime.", "7"),
    ]
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"line 2: a 'alpaca' record does not fit a 'preference' strategy"):
        curate_drop(write_drop(tmp_path / "d.jsonl", rows), out, data_format="preference", embedder=embedder)
    assert not out.exists()


def test_drop_that_dedups_to_one_record_is_refused(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    rows = [
        alpaca("What is the capital of France?", "Paris."),
        alpaca("What is the capital of France?", "Paris."),
    ]
    with pytest.raises(DataError, match="only 1 distinct record"):
        curate_drop(
            write_drop(tmp_path / "d.jsonl", rows), tmp_path / "out", data_format="sft", embedder=embedder
        )


def test_failed_write_leaves_no_outputs_or_temp_files(
    tmp_path: Path, embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def flaky_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsio.os, "fsync", flaky_fsync)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        curate_drop(write_drop(tmp_path / "d.jsonl", drop_rows()), out, data_format="sft", embedder=embedder)
    assert list(out.iterdir()) == []
