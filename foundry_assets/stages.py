"""What each stage hands the next: one typed, frozen result per stage, defined once.

Each stage's domain entry point returns its result (`intake.snapshot_drop → RawData`, `curator.curate →
CuratedDataset`, `crucible.train_job → TrainedAdapter`, `alchemist.merge_job → MergedModel`, `examiner.examine_job →
ExamResult`, `publisher.publish_job → PublishedArtifact`); the asset of that stage stores it (the IO manager pickles
it) and the next stage receives it. Every result carries the job's lot number, so lineage never depends on a path.
This module imports nothing of the foundry: every stage may import it, it imports no stage.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

DataFormat = Literal["sft", "preference"]
"""What a strategy trains on: instruction/response pairs, or preference triplets (prompt, chosen, rejected)."""


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
    """Examiner: the verdict and the report (as published), written to `report_path`."""

    lot_number: str
    job_id: str
    passed: bool
    reasons: list[str]
    gate: list[str]
    report: dict[str, Any]
    """`ExamReport.to_dict()`: metrics, contamination, per-item answers, device, dtype, seconds."""
    markdown: str
    report_path: Path
    source_jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return list(self.report.get("metrics", []))

    def document(self) -> dict[str, Any]:
        """The exam report as written to `report_path` and published with the artifact."""
        return {
            **self.report,
            "job_id": self.job_id,
            "lot_number": self.lot_number,
            "markdown": self.markdown,
            "source_jobs": self.source_jobs,
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
