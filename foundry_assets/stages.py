"""What each stage hands the next: one typed, frozen result per stage, defined once.

Each stage's domain entry point returns its result (`intake.snapshot_drop → RawData`, `curator.curate →
CuratedDataset`, `crucible.train_job → TrainedAdapter`, `alchemist.merge_job → MergedModel`, `examiner.examine_job →
ExamResult`, `publisher.publish_job → PublishedArtifact`); the asset of that stage stores it as JSON (`to_document`,
never a pickle: nothing under DAGSTER_HOME is code the next step runs) and the next stage receives it back
(`from_document`). Every result carries the job's lot number, so lineage never depends on a path.
This module imports nothing of the foundry: every stage may import it, it imports no stage.
"""

import json
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

DataFormat = Literal["sft", "preference"]
"""What a strategy trains on: instruction/response pairs, or preference triplets (prompt, chosen, rejected)."""
EmbedField = Literal[
    "instruction",
    "input",
    "output",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "system",
    "user",
    "assistant",
]
"""A content field SemDeDup may embed (`curation.embed_fields`): a field of the alpaca, prompt_completion or preference
shape, or the turns of one role of a chat transcript (``messages``)."""


@dataclass(frozen=True)
class RawData:
    """Intake: the job's data drop, copied into the job folder and hashed with its manifest."""

    job_id: str
    data_path: Path
    lines: int
    data_format: DataFormat
    lot_number: str
    dataset_sha256: str
    manifest_sha256: str

    def lot(self) -> dict[str, str]:
        """The lot number and the two hashes it is made of (asset metadata, audit records)."""
        return {
            "lot_number": self.lot_number,
            "dataset_sha256": self.dataset_sha256,
            "manifest_sha256": self.manifest_sha256,
        }


@dataclass(frozen=True)
class CuratedDataset:
    """Curator: the deduplicated, formatted training split and the held-out test split (each test row has `task`)."""

    lot_number: str
    train_path: Path
    test_path: Path
    data_format: DataFormat
    counts: dict[str, Any] = field(default_factory=dict)
    """`CurationResult.to_metadata()`: rows in, kept, removed, quarantined, split sizes, hashes."""


@dataclass(frozen=True)
class TrainedAdapter:
    """Crucible: the adapter folder (None for a merge-only job, which trains nothing) and the base it was trained on."""

    lot_number: str
    model_path: str
    adapter_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    backend: str | None = None
    device: str | None = None

    @property
    def skipped(self) -> bool:
        return self.adapter_dir is None


@dataclass(frozen=True)
class MergedModel:
    """Alchemist: a loadable model folder (base + adapters, DARE-TIES or one adapter folded) and its lineage."""

    lot_number: str
    model_dir: Path
    base_model: str
    method: str
    device: str
    dtype: str
    files: dict[str, str] = field(default_factory=dict)
    adapter_dir: Path | None = None
    """This job's own adapter (None for a merge-only job)."""
    source_jobs: list[dict[str, Any]] = field(default_factory=list)
    """Each merge source job: job_id, lot, adapter hashes, exam record (`JobSource.to_metadata()`)."""
    source_train_paths: list[Path] = field(default_factory=list)
    """The source jobs' training splits: the exam's decontamination checks against them too."""


@dataclass(frozen=True)
class ExamResult:
    """Examiner: the report (as published), written to `report_path`; the verdict is read from the report, never kept
    beside it, so the two cannot disagree."""

    lot_number: str
    job_id: str
    report: dict[str, Any]
    """`ExamReport.to_dict()`: verdict, reasons, gate, metrics, contamination, per-item answers, device, seconds."""
    markdown: str
    report_path: Path
    source_jobs: list[dict[str, Any]] = field(default_factory=list)
    model_sha256: str = ""
    """Tree digest of the model folder as the exam loaded it (hashed by the exam): the publish gate ties the verdict
    to the merge record's files with it."""

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed", False))

    @property
    def reasons(self) -> list[str]:
        return [str(reason) for reason in self.report.get("reasons", [])]

    @property
    def gate(self) -> list[str]:
        return [str(name) for name in self.report.get("gate", [])]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.report.get("metrics", []))

    @property
    def champion(self) -> dict[str, Any] | None:
        """The current release the candidate also had to beat (label, job_id, tag, uri, lot_number, artifact, files,
        seconds), or None when the exam compared with the base model only (and in reports written before champions)."""
        champion = self.report.get("champion")
        return dict(champion) if champion else None

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The merge source jobs scored as their own sides (job_id, adapter_dir, seconds; each metric's source values
        are in `metrics`); empty when the exam had none (and in reports written before sources were scored)."""
        return [dict(source) for source in self.report.get("sources") or []]

    @property
    def source_retention(self) -> float | None:
        """The share of the best source's gated rates the candidate had to keep (`exam.source_retention`); None
        without sources."""
        share = self.report.get("source_retention")
        return None if share is None else float(share)

    def verdict_record(self) -> dict[str, Any]:
        """The `exam_verdict` audit record's payload: what the publish gate reads back from the trail."""
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "metrics": self.metrics,
            "report": self.report,
            "lot_number": self.lot_number,
            "model_sha256": self.model_sha256,
            "champion": self.champion,
            "sources": self.sources,
            "source_retention": self.source_retention,
        }

    def document(self) -> dict[str, Any]:
        """The exam report as written to `report_path` and published with the artifact."""
        return {
            **self.report,
            "job_id": self.job_id,
            "lot_number": self.lot_number,
            "markdown": self.markdown,
            "source_jobs": self.source_jobs,
            "model_sha256": self.model_sha256,
        }


@dataclass(frozen=True)
class PublishedArtifact:
    """Publisher: the verified artifact in its registry, and what left the node after it."""

    lot_number: str
    uri: str
    tag: str
    status: str
    """"published", or "unchanged" when the tag already held these exact files."""
    artifact: str
    """"adapter" or "merged_model"."""
    artifact_sha256: str
    files: dict[str, str] = field(default_factory=dict)
    weights_removed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


StageResult = RawData | CuratedDataset | TrainedAdapter | MergedModel | ExamResult | PublishedArtifact
STAGE_RESULTS: dict[str, type[StageResult]] = {
    cls.__name__: cls
    for cls in (RawData, CuratedDataset, TrainedAdapter, MergedModel, ExamResult, PublishedArtifact)
}
"""The only types a stored step output may name: the IO manager builds nothing else from a file."""


def to_document(value: StageResult) -> dict[str, Any]:
    """A stage result as a JSON document: its type's name and its fields (paths as strings)."""
    if type(value).__name__ not in STAGE_RESULTS:
        raise TypeError(f"{type(value).__name__} is not a stage result ({', '.join(STAGE_RESULTS)})")

    def plain(item: object) -> str:
        if isinstance(item, Path):
            return str(item)
        raise TypeError(f"{type(item).__name__} in a stage result is not JSON")

    return {"type": type(value).__name__, "fields": json.loads(json.dumps(asdict(value), default=plain))}


def from_document(document: Any) -> StageResult:
    """The stage result `to_document` wrote. ValueError names what does not fit: an unknown type, a missing or
    unknown field (a value stored by another version of the foundry: re-materialize the asset)."""
    if not isinstance(document, dict) or document.get("type") not in STAGE_RESULTS:
        kind = document.get("type") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"stored value of type {kind!r} is not a stage result ({', '.join(STAGE_RESULTS)})")
    cls = STAGE_RESULTS[document["type"]]
    values = document.get("fields")
    names = {f.name for f in fields(cls)}
    if not isinstance(values, dict) or set(values) - names:
        unknown = sorted(set(values) - names) if isinstance(values, dict) else "not an object"
        raise ValueError(f"stored {cls.__name__}: unknown fields {unknown}; re-materialize the asset")
    hints = get_type_hints(cls)
    try:
        return cls(**{name: _typed(hints[name], value) for name, value in values.items()})
    except TypeError as e:
        raise ValueError(f"stored {cls.__name__}: {e}; re-materialize the asset") from e


def _typed(hint: Any, value: Any) -> Any:
    """`value` as the field's type wants it: paths back from strings (also inside `X | None` and `list[X]`)."""
    if value is None:
        return None
    if hint is Path:
        return Path(value)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return _typed(next(arg for arg in get_args(hint) if arg is not type(None)), value)
    if origin is list and get_args(hint) == (Path,):
        return [Path(item) for item in value]
    return value
