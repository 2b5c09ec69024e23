"""One drop in, five files out: read (quarantining bad records) → check the shape against the strategy → embed
(through the cache) → SemDeDup → split → decontaminate → write (atomically).

Outputs in `out_dir`:

- ``train.jsonl`` / ``test.jsonl``: one training example per line in TRL's conversational formats
  (``{"prompt", "completion"}`` for sft, ``{"prompt", "chosen", "rejected"}`` for preference, each a list of
  ``{role, content}`` turns: `formats.to_training_example`) plus ``"source_line"``, the record's line in the drop;
- ``removed.jsonl``: ``{"line", "kept_line", "similarity"}`` for every near-duplicate SemDeDup removed;
- ``quarantine.jsonl``: ``{"line", "reason", "raw"}`` for every record that could not be used;
- ``contamination.jsonl``: ``{"split": "test", "line", "ngram"}`` for every test item sharing an n-gram with the
  training set, and ``{"split": "train", "line", "dropped"}`` for every training item sharing one with the test set
  (`contamination`: the exam's definition, on the texts the exam reads).

Nothing is lost silently: ``rows_read = quarantined + removed + kept`` and ``kept = train_rows + test_rows +
train_decontaminated`` always hold (checked before anything is written). A drop that is empty, or entirely
quarantined, is a DataError (the quarantine file is still written so the reasons can be read). A record whose shape
does not fit the strategy (an alpaca record for ORPO) is not quarantined: the whole drop is refused, since that is a
configuration mistake, not a bad line.

Each file is written to a temporary name in `out_dir` and only renamed into place (``os.replace``) once all are
complete, so a failure leaves the previous outputs (or nothing) rather than a half-written file.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from foundry_assets.curator.cache import Embedder, EmbeddingCache, embed_texts
from foundry_assets.curator.contamination import contamination, content_text
from foundry_assets.curator.decontam import OverlapReport
from foundry_assets.curator.formats import (
    EXAM_ITEM,
    DataFormat,
    EmbedField,
    Record,
    embedding_texts,
    exam_item,
    split_train_test,
    to_training_example,
)
from foundry_assets.curator.readers import FileFormat, ReadResult, read_drop
from foundry_assets.curator.report import removed_examples, similarity_histogram_md
from foundry_assets.curator.semdedup import DedupResult, KeepPolicy, semdedup
from foundry_assets.errors import DataError
from foundry_assets.fsio import jsonl_bytes, write_files
from foundry_assets.stages import CuratedDataset
from foundry_assets.workspace import QUARANTINE, TEST_SPLIT, TRAIN_SPLIT

REMOVED_FILE = "removed.jsonl"
CONTAMINATION_FILE = "contamination.jsonl"
_MAX_LISTED_LINES = 5


@dataclass
class CurationResult:
    """What curation did to one drop: counts, output files and their hashes, and a few removed examples."""

    rows_in: int
    kept: int
    removed: int
    train_rows: int
    test_rows: int
    train_path: Path
    test_path: Path
    removed_path: Path
    train_sha256: str
    test_sha256: str
    removed_examples: list[dict[str, Any]]
    data_format: DataFormat
    threshold: float = 0.95
    embedder: str = ""
    overlap: OverlapReport | None = field(default=None)
    rows_read: int = 0
    quarantined: int = 0
    blank_lines: int = 0
    train_decontaminated: int = 0
    file_format: str = "jsonl"
    keep_policy: str = "earliest"
    n_clusters: int = 1
    removed_in_boundary_pass: int = 0
    embedded_new: int = 0
    embedded_cached: int = 0
    quarantine_path: Path | None = None
    contamination_path: Path | None = None
    nn_similarity_quantiles: dict[str, float] = field(default_factory=dict)
    similarity_histogram_md: str = ""
    quarantine_examples: list[dict[str, Any]] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        """JSON-able counters, hashes and the histogram (str) for Dagster materialisation metadata."""
        meta: dict[str, Any] = {
            "rows_read": self.rows_read,
            "quarantined": self.quarantined,
            "rows_in": self.rows_in,
            "kept": self.kept,
            "removed": self.removed,
            "train_rows": self.train_rows,
            "test_rows": self.test_rows,
            "train_decontaminated": self.train_decontaminated,
            "removed_fraction": self.removed / self.rows_in if self.rows_in else 0.0,
            "semdedup_threshold": self.threshold,
            "semdedup_keep_policy": self.keep_policy,
            "semdedup_clusters": self.n_clusters,
            "removed_in_boundary_pass": self.removed_in_boundary_pass,
            "embedded_new": self.embedded_new,
            "embedded_cached": self.embedded_cached,
            "embedder": self.embedder,
            "data_format": self.data_format,
            "file_format": self.file_format,
            "train_sha256": self.train_sha256,
            "test_sha256": self.test_sha256,
            **{f"nn_similarity_{k}": v for k, v in self.nn_similarity_quantiles.items()},
            "similarity_histogram_md": self.similarity_histogram_md,
        }
        if self.overlap is not None:
            meta["test_ngram_overlap_items"] = len(self.overlap.contaminated)
            meta["test_ngram_overlap_fraction"] = self.overlap.fraction
        return meta

    def dataset(self, lot_number: str) -> CuratedDataset:
        """The stage's result handed to the crucible: both splits under the job's lot number, with these counts."""
        return CuratedDataset(
            lot_number=lot_number,
            train_path=self.train_path,
            test_path=self.test_path,
            data_format=self.data_format,
            counts=self.to_metadata(),
        )


def _format_all(records: list[Record], data_format: DataFormat) -> list[dict[str, Any]]:
    """Format every record, or raise one DataError listing the first lines that do not fit."""
    examples: list[dict[str, Any]] = []
    problems: list[str] = []
    for record in records:
        try:
            examples.append(to_training_example(record, data_format))
        except DataError as e:
            problems.append(str(e))
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED_LINES])
        more = f" (and {len(problems) - _MAX_LISTED_LINES} more)" if len(problems) > _MAX_LISTED_LINES else ""
        raise DataError(f"{len(problems)} of {len(records)} records do not fit the strategy: {shown}{more}")
    return examples


def _test_row(example: dict[str, Any], record: Record) -> dict[str, Any]:
    """A held-out row: the formatted example, its drop line and, for a record marked with a task, its exam item."""
    item = exam_item(record)
    return {**example, "source_line": record.line, **({EXAM_ITEM: item} if item else {})}


def _check_read(read: ReadResult, out_dir: Path) -> None:
    """Refuse an empty or entirely quarantined drop (after writing the quarantine file so it can be read)."""
    if read.records:
        return
    if not read.quarantined:
        raise DataError(f"{read.path}: the data drop is empty (no records)")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_files({out_dir / QUARANTINE: jsonl_bytes(q.to_json() for q in read.quarantined)})
    reasons = "; ".join(f"line {q.line}: {q.reason}" for q in read.quarantined[:_MAX_LISTED_LINES])
    raise DataError(
        f"{read.path}: all {len(read.quarantined)} records were quarantined (see {out_dir / QUARANTINE}): "
        f"{reasons}"
    )


def _quantiles(values: np.ndarray | None) -> dict[str, float]:
    if values is None or np.isnan(values).all():
        return {}
    q = np.nanpercentile(values.astype(np.float64), [50, 90, 99])
    return {"p50": round(float(q[0]), 4), "p90": round(float(q[1]), 4), "p99": round(float(q[2]), 4)}


@dataclass(frozen=True)
class _Split:
    """The kept records split train/test (contaminated training records dropped when asked), the overlap, its rows."""

    train: list[Record]
    test: list[Record]
    overlap: OverlapReport
    contamination: list[dict[str, Any]]
    dropped: int


def _split(
    kept: list[Record],
    text_of: dict[int, str],
    *,
    test_fraction: float,
    split_seed: int,
    ngram_n: int,
    decontaminate_train: bool,
) -> _Split:
    """Hold out the test split, find the n-grams it shares with training, and decontaminate training if asked."""
    train, test = split_train_test(kept, test_fraction, split_seed)
    overlap = contamination(
        [text_of[r.line] for r in train], [text_of[r.line] for r in test], ngram_n, find_train=True
    )
    train_hits = set(overlap.contaminated_train or [])
    rows: list[dict[str, Any]] = [{"split": "test", "line": test[i].line} for i in overlap.contaminated]
    for example in overlap.examples:
        rows[overlap.contaminated.index(example["test_index"])]["ngram"] = example["ngram"]
    rows += [
        {"split": "train", "line": train[i].line, "dropped": decontaminate_train} for i in sorted(train_hits)
    ]
    dropped = len(train_hits) if decontaminate_train else 0
    if decontaminate_train:
        train = [r for i, r in enumerate(train) if i not in train_hits]
    return _Split(train, test, overlap, rows, dropped)


@dataclass(frozen=True)
class _Curated:
    """Everything decided about one drop before anything is written; the counts are checked to add up on creation."""

    read: ReadResult
    examples: list[dict[str, Any]]
    texts: list[str]
    embedded_new: int
    dedup: DedupResult
    split: _Split

    def __post_init__(self) -> None:
        read, dedup, split = self.read, self.dedup, self.split
        if read.read != len(read.quarantined) + len(dedup.removed) + len(dedup.kept) or len(dedup.kept) != (
            len(split.train) + len(split.test) + split.dropped
        ):  # cannot happen; checked so that a future bug fails loudly instead of losing records
            raise RuntimeError("curation counts do not add up; nothing was written")

    def payloads(self) -> dict[str, bytes]:
        """The five output files' bytes, by file name."""
        records = self.read.records
        by_line = {r.line: ex for r, ex in zip(records, self.examples, strict=True)}
        removed_rows = [
            {
                "line": records[item.index].line,
                "kept_line": records[item.kept_index].line,
                "similarity": item.similarity,
            }
            for item in self.dedup.removed
        ]
        return {
            TRAIN_SPLIT: jsonl_bytes({**by_line[r.line], "source_line": r.line} for r in self.split.train),
            TEST_SPLIT: jsonl_bytes(_test_row(by_line[r.line], r) for r in self.split.test),
            REMOVED_FILE: jsonl_bytes(removed_rows),
            QUARANTINE: jsonl_bytes(q.to_json() for q in self.read.quarantined),
            CONTAMINATION_FILE: jsonl_bytes(self.split.contamination),
        }

    def result(
        self, out_dir: Path, payloads: dict[str, bytes], embedder: str, data_format: DataFormat
    ) -> CurationResult:
        """The counts, paths and hashes of what was written to `out_dir`."""
        read, dedup, split = self.read, self.dedup, self.split
        nn = dedup.nn_similarity
        return CurationResult(
            rows_in=len(read.records),
            kept=len(dedup.kept),
            removed=len(dedup.removed),
            train_rows=len(split.train),
            test_rows=len(split.test),
            train_path=out_dir / TRAIN_SPLIT,
            test_path=out_dir / TEST_SPLIT,
            removed_path=out_dir / REMOVED_FILE,
            train_sha256=hashlib.sha256(payloads[TRAIN_SPLIT]).hexdigest(),
            test_sha256=hashlib.sha256(payloads[TEST_SPLIT]).hexdigest(),
            removed_examples=removed_examples(dedup.removed, self.texts, [r.line for r in read.records]),
            threshold=dedup.threshold,
            embedder=embedder,
            data_format=data_format,
            overlap=split.overlap,
            rows_read=read.read,
            quarantined=len(read.quarantined),
            blank_lines=read.blank,
            train_decontaminated=split.dropped,
            file_format=read.file_format,
            keep_policy=dedup.keep,
            n_clusters=dedup.n_clusters,
            removed_in_boundary_pass=dedup.removed_in_boundary_pass,
            embedded_new=self.embedded_new,
            embedded_cached=len(self.texts) - self.embedded_new,
            quarantine_path=out_dir / QUARANTINE,
            contamination_path=out_dir / CONTAMINATION_FILE,
            nn_similarity_quantiles=_quantiles(nn),
            similarity_histogram_md=similarity_histogram_md(
                nn if nn is not None else np.zeros(0), dedup.threshold
            ),
            quarantine_examples=[q.to_json() for q in read.quarantined[:_MAX_LISTED_LINES]],
        )


def curate_drop(
    data_path: Path,
    out_dir: Path,
    *,
    data_format: DataFormat,
    embedder: Embedder,
    threshold: float = 0.95,
    test_fraction: float = 0.1,
    split_seed: int = 0,
    file_format: FileFormat | None = None,
    keep: KeepPolicy = "earliest",
    n_clusters: int | None = None,
    dedup_seed: int = 0,
    cache_dir: Path | str | None = None,
    decontaminate_train: bool = False,
    ngram_n: int = 13,
    embed_fields: Sequence[EmbedField] | None = None,
) -> CurationResult:
    """Read, validate, deduplicate, split and decontaminate one drop; write the five files and return the counts.

    `file_format` defaults to the file's suffix; `keep`, `n_clusters` and `dedup_seed` go to `semdedup`;
    `cache_dir` enables the embedding cache; `decontaminate_train` drops training records that share an
    `ngram_n`-gram with a test record (they are always reported); `embed_fields` limits what SemDeDup embeds of
    each record to the named fields (default: every content field)."""
    out_dir = Path(out_dir)
    read = read_drop(Path(data_path), file_format)
    _check_read(read, out_dir)
    records = read.records
    examples = _format_all(records, data_format)
    texts = embedding_texts(records, embed_fields)
    cache = EmbeddingCache(cache_dir, embedder.name, embedder.dim) if cache_dir is not None else None
    vectors, embedded_new = embed_texts(texts, embedder, cache=cache)
    dedup = semdedup(vectors, threshold, n_clusters=n_clusters, keep=keep, seed=dedup_seed)
    kept = [records[i] for i in dedup.kept]
    if len(kept) < 2:
        raise DataError(
            f"{data_path}: only {len(kept)} distinct record(s) after SemDeDup (threshold {threshold}); "
            "at least 2 are needed to hold out a test set — add data or raise the threshold"
        )
    text_of = {r.line: content_text(ex) for r, ex in zip(records, examples, strict=True)}
    split = _split(
        kept,
        text_of,
        test_fraction=test_fraction,
        split_seed=split_seed,
        ngram_n=ngram_n,
        decontaminate_train=decontaminate_train,
    )
    curated = _Curated(read, examples, texts, embedded_new, dedup, split)
    payloads = curated.payloads()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_files({out_dir / name: data for name, data in payloads.items()})
    return curated.result(out_dir, payloads, embedder.name, data_format)
