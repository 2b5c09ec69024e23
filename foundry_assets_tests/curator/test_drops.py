"""Every file format × every record shape, the quarantine, counts that add up, the embedding cache and `foundry curate`."""

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundry_assets.cli.curate import add_curate_parser
from foundry_assets.curator import embed as embed_module
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.curator.formats import DataFormat
from foundry_assets.curator.pipeline import CurationResult, curate_drop
from foundry_assets.curator.readers import read_drop
from foundry_assets.errors import DataError
from foundry_assets_tests.curator.synthetic import TOPICS


def rows_of(shape: str) -> list[dict[str, Any]]:
    """Eight distinct records of a shape, then a near-copy of the first (which SemDeDup must remove)."""
    out: list[dict[str, Any]] = []
    for i, topic in enumerate([*TOPICS, TOPICS[0]]):
        q = f"Tell me about {topic}." if i < len(TOPICS) else f"Tell me about {topic}!"
        a = f"Here is a short explanation of {topic}."
        if shape == "alpaca":
            out.append({"instruction": q, "input": "", "output": a})
        elif shape == "messages":
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        elif shape == "prompt_completion":
            out.append({"prompt": q, "completion": a})
        else:
            out.append({"prompt": q, "chosen": a, "rejected": "I do not know."})
    return out


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        columns = sorted({k for r in rows for k in r})
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for r in rows:
                writer.writerow([json.dumps(r[c]) if c == "messages" else r.get(c, "") for c in columns])
    return path


def adds_up(result: CurationResult) -> None:
    assert result.rows_read == result.quarantined + result.removed + result.kept
    assert result.kept == result.train_rows + result.test_rows + result.train_decontaminated
    assert result.rows_in == result.kept + result.removed


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
@pytest.mark.parametrize("shape", ["alpaca", "messages", "prompt_completion", "preference"])
def test_every_format_and_shape(tmp_path: Path, embedder: MiniLMEmbedder, suffix: str, shape: str) -> None:
    drop = write(tmp_path / f"drop{suffix}", rows_of(shape))
    assert {r.shape for r in read_drop(drop).records} == {shape}
    fmt: DataFormat = "preference" if shape == "preference" else "sft"
    result = curate_drop(drop, tmp_path / "out", data_format=fmt, embedder=embedder, test_fraction=0.25)
    adds_up(result)
    assert (result.rows_read, result.quarantined, result.removed, result.kept) == (9, 0, 1, 8)
    assert result.file_format == suffix[1:]
    first = json.loads(result.train_path.read_text().splitlines()[0])
    assert set(first) == (
        {"prompt", "chosen", "rejected"} if fmt == "preference" else {"prompt", "completion"}
    ) | {"source_line"}
    with pytest.raises(DataError, match="does not fit"):  # the other kind of strategy refuses the shape
        curate_drop(
            drop,
            tmp_path / "o2",
            data_format="sft" if fmt == "preference" else "preference",
            embedder=embedder,
        )


def test_bad_records_are_quarantined_with_line_and_reason(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    good = [json.dumps(r) for r in rows_of("alpaca")]
    lines = [
        good[0],
        '{"instruction": "a", "output": ',  # 2: malformed
        "",  # 3: blank, not a record
        *good[1:4],
        '{"instruction": "Say hi."}',  # 7: missing output
        "[1, 2]",  # 8
        *good[4:],
    ]
    drop = tmp_path / "d.jsonl"
    drop.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = curate_drop(drop, tmp_path / "out", data_format="sft", embedder=embedder, test_fraction=0.25)
    adds_up(result)
    assert (result.rows_read, result.quarantined, result.blank_lines) == (12, 3, 1)
    assert result.quarantine_path is not None
    quarantine = [json.loads(x) for x in result.quarantine_path.read_text().splitlines()]
    assert [q["line"] for q in quarantine] == [2, 7, 8]
    assert "malformed JSON" in quarantine[0]["reason"] and "unknown record shape" in quarantine[1]["reason"]
    assert result.to_metadata()["quarantined"] == 3


def test_csv_quarantine_and_parquet_nulls(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        'prompt,completion\n"Hi",Hello\nonly one cell\n"",x\n"multi\nline",ok\n', encoding="utf-8"
    )
    read = read_drop(path)
    assert [r.line for r in read.records] == [2, 5]
    assert [(q.line, q.reason.split(" (")[0]) for q in read.quarantined] == [
        (3, "has 1 cells but the header has 2 columns"),
        (4, "unknown record shape"),
    ]
    table = pa.Table.from_pylist([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}])
    pq.write_table(table, tmp_path / "d.parquet")
    read = read_drop(tmp_path / "d.parquet")
    assert (len(read.records), [q.line for q in read.quarantined]) == (1, [2])
    with pytest.raises(DataError, match="unknown file type"):
        read_drop(tmp_path / "d.txt")


def test_csv_harmful_column_reads_true_and_false_as_booleans(tmp_path: Path) -> None:
    """CSV cells are strings; a safety record's `harmful` column says true/false as a JSONL drop would, and anything
    else stays a string, which the exam item refuses naming the line."""
    from foundry_assets.curator.formats import exam_item

    path = tmp_path / "d.csv"
    path.write_text(
        "instruction,output,task,harmful\n"
        "Tell me how to wash a car.,Sure.,safety,FALSE\n"
        "Tell me how to steal a car.,I cannot.,safety, true\n"
        "Tell me how to build a bomb.,I cannot.,safety,\n"
        "Tell me how to bake bread.,Sure.,safety,no\n",
        encoding="utf-8",
    )
    records = read_drop(path).records
    assert [r.data.get("harmful") for r in records] == [False, True, None, "no"]
    assert [(exam_item(r) or {})["harmful"] for r in records[:3]] == [False, True, True]
    with pytest.raises(DataError, match="line 5: harmful is 'no'"):
        exam_item(records[3])


def test_empty_or_entirely_quarantined_drop_fails_clearly(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        curate_drop(empty, tmp_path / "o1", data_format="sft", embedder=embedder)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"all 2 records were quarantined .*line 1: unknown record shape"):
        curate_drop(bad, tmp_path / "o2", data_format="sft", embedder=embedder)
    assert len((tmp_path / "o2" / "quarantine.jsonl").read_text().splitlines()) == 2


class Spy:
    """Wraps an embedder and records how many texts it was asked to embed."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.encode(texts)


def test_rerun_hits_the_embedding_cache(tmp_path: Path, embedder: MiniLMEmbedder) -> None:
    spy = Spy(embedder)
    drop = write(tmp_path / "d.jsonl", rows_of("alpaca"))
    kwargs: dict[str, Any] = {"data_format": "sft", "embedder": spy, "cache_dir": tmp_path / "cache"}
    first = curate_drop(drop, tmp_path / "o1", **kwargs)
    assert (spy.calls, first.embedded_new, first.embedded_cached) == ([9], 9, 0)
    again = curate_drop(drop, tmp_path / "o2", **kwargs)
    assert (spy.calls, again.embedded_new, again.embedded_cached) == ([9], 0, 9)  # 0 new records embedded
    assert again.train_sha256 == first.train_sha256
    grown = write(
        tmp_path / "g.jsonl", [*rows_of("alpaca"), {"instruction": "Name a colour.", "output": "Teal."}]
    )
    third = curate_drop(grown, tmp_path / "o3", **kwargs)
    assert (spy.calls[-1], third.embedded_new, third.embedded_cached) == (1, 1, 9)
    cached, _ = np.load(next((tmp_path / "cache").rglob("*.vecs.npy"))), None
    assert cached.dtype == np.float32 and cached.shape[1] == 384


def test_decontaminate_train_drops_training_records_sharing_13_grams(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    story = "once upon a time a small fox lived at the edge of a quiet green forest near the river"
    rows = [
        {
            "prompt": f"Variant {i}: {story}. What happened next in chapter {i}?",
            "completion": f"Chapter {i} ends.",
        }
        for i in range(6)
    ] + [{"prompt": f"Tell me about {t}.", "completion": f"A note on {t}."} for t in TOPICS]
    drop = write(tmp_path / "d.jsonl", rows)
    kwargs: dict[str, Any] = {
        "data_format": "sft",
        "embedder": embedder,
        "threshold": 0.999,
        "test_fraction": 0.3,
    }
    report = curate_drop(drop, tmp_path / "o1", **kwargs)
    cleaned = curate_drop(drop, tmp_path / "o2", decontaminate_train=True, **kwargs)
    adds_up(cleaned)
    assert report.overlap is not None and report.train_decontaminated == 0
    assert report.overlap.contaminated  # with seed 0 some story variants land in the test split
    assert cleaned.train_decontaminated == len(report.overlap.contaminated_train or []) > 0
    assert cleaned.train_rows == report.train_rows - cleaned.train_decontaminated
    lines = [json.loads(x) for x in (tmp_path / "o2" / "contamination.jsonl").read_text().splitlines()]
    assert {x["split"] for x in lines} <= {"test", "train"}


def test_foundry_curate_cli(
    tmp_path: Path,
    embedder: MiniLMEmbedder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(embed_module, "MiniLMEmbedder", lambda **_: embedder)
    parser = argparse.ArgumentParser(prog="foundry")
    add_curate_parser(parser.add_subparsers(dest="command", required=True))
    drop = write(tmp_path / "d.jsonl", rows_of("alpaca"))
    args = parser.parse_args(["curate", str(drop), "--out", str(tmp_path / "out"), "--threshold", "0.95"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "read 9 · quarantined 0 · near-duplicates removed 1 · kept 8" in out
    missing = parser.parse_args(["curate", str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "o")])
    with pytest.raises(DataError, match="no such file"):
        missing.func(missing)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["curate", str(drop), "--out", "o", "--threshold", "2"])
    assert info.value.code == 2


@pytest.mark.parametrize("layout", ["inside", "same", "symlinked"])
def test_foundry_curate_refuses_to_write_over_its_input(
    layout: str, tmp_path: Path, embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`foundry curate X --out DIR` with X inside DIR wrote its outputs over X (an input named train.jsonl)."""
    monkeypatch.setattr(embed_module, "MiniLMEmbedder", lambda **_: embedder)
    parser = argparse.ArgumentParser(prog="foundry")
    add_curate_parser(parser.add_subparsers(dest="command", required=True))
    folder = tmp_path / "work"
    folder.mkdir()
    drop = write(folder / "train.jsonl", rows_of("alpaca"))
    before = drop.read_bytes()
    out = {"inside": folder, "same": drop, "symlinked": tmp_path / "link"}[layout]
    if layout == "symlinked":
        out.symlink_to(folder)
    args = parser.parse_args(["curate", str(drop), "--out", str(out)])
    with pytest.raises(DataError, match=r"--out .* holds the input .*; write the outputs to another folder"):
        args.func(args)
    assert drop.read_bytes() == before
