"""Where a job's files live: its registered manifest, its stage outputs and its audit trail.

A job's stage folders are of two kinds. **Weights** (adapter, checkpoints, fetched merge sources, merge cache, merged
model, the exam's champion, publish staging) are large and leave the node once the job's artifact is published and verified in its
registry (`Workspace.remove_weights`; the product rule: no models left stranding on the GPU node). **Records** (the
data snapshot, the curated splits, the exam report, the manifest, the audit trail) stay: they are what an auditor
re-checks, and a merge job reads a source job's curated `train.jsonl` for its exam's decontamination.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from foundry_assets.audit_events import Event, latest
from foundry_assets.errors import ManifestError
from foundry_assets.fsio import write_text
from foundry_assets.manifest import TrainingManifest, load_manifest


def default_root() -> Path:
    """FOUNDRY_HOME, else `foundry/` inside DAGSTER_HOME, else `.foundry` in the working folder."""
    if home := os.environ.get("FOUNDRY_HOME"):
        return Path(home)
    if dagster_home := os.environ.get("DAGSTER_HOME"):
        return Path(dagster_home) / "foundry"
    return Path(".foundry").resolve()


RAW, CURATED, EXAM = "raw", "curated", "exam"
ADAPTER, CHECKPOINTS, SOURCES, MERGE_CACHE, MERGED, CHAMPION, STAGING = (
    "adapter",
    "checkpoints",
    "sources",
    "merge-cache",
    "merged",
    "champion",
    "staging",
)
WEIGHT_STAGES = (ADAPTER, CHECKPOINTS, SOURCES, MERGE_CACHE, MERGED, CHAMPION, STAGING)
"""Stage folders that hold model weights (or copies of them): removed from the node after a verified publish."""
RECORD_STAGES = (RAW, CURATED, EXAM)
"""Stage folders that hold the job's records: kept on the node for ever (with the manifest and the audit trail)."""
TRAIN_SPLIT, TEST_SPLIT, QUARANTINE = "train.jsonl", "test.jsonl", "quarantine.jsonl"
"""The curated folder's files: the training split, the held-out split (the exam's items) and the quarantined lines."""
EXAM_REPORT = "exam_report.json"


@dataclass(frozen=True)
class RemovedWeights:
    """What `remove_weights` did: {stage folder: bytes freed}, and {stage folder: error} for any it could not remove."""

    folders: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def bytes_freed(self) -> int:
        return sum(self.folders.values())

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-able dict for the audit trail and asset metadata."""
        return {"folders": dict(self.folders), "bytes_freed": self.bytes_freed, "failed": dict(self.failed)}


def missing_weights_reason(folder: str | Path, records: list[dict[str, Any]]) -> str:
    """Why a weight folder a stage needs is not on the node, and what to do, from the job's audit records."""
    removed = latest(records, Event.NODE_WEIGHTS_REMOVED)
    if removed is None:
        return f"{folder} does not exist; run the job again (`foundry run MANIFEST`) to rebuild it"
    return (
        f"{folder} was removed from this node after the job's artifact was published and verified (audit record "
        f"#{removed.get('seq')} {Event.NODE_WEIGHTS_REMOVED}); the weights live in the registry only. Run the whole job "
        "again (`foundry run MANIFEST`) to rebuild them, or fetch the published artifact from its registry"
    )


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@dataclass(frozen=True)
class Workspace:
    """The foundry's folder: `jobs/<job_id>/manifest.yaml`, `jobs/<job_id>/<stage>/`, `audit/<job_id>.jsonl`."""

    root: Path

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def stage_dir(self, job_id: str, stage: str) -> Path:
        return self.job_dir(job_id) / stage

    def inbox_dir(self) -> Path:
        """Where the drop sensor looks for drops unless FOUNDRY_DROP_LOCATION names another place."""
        return self.root / "inbox"

    def trusted_signers_path(self) -> Path:
        """The trusted-signers file (`release.signers`) unless FOUNDRY_TRUSTED_SIGNERS names another file."""
        return self.root / "trusted_signers.yaml"

    def received_dir(self) -> Path:
        """Where drops are received: content-addressed copies, and the scratch folders S3 drops are downloaded to."""
        return self.root / "received"

    def snapshot_path(self, job_id: str, suffix: str) -> Path:
        """The job's copy of its data drop (`raw/data<suffix>`), hashed into the lot number."""
        return self.stage_dir(job_id, RAW) / f"data{suffix or '.jsonl'}"

    def curated_dir(self, job_id: str) -> Path:
        return self.stage_dir(job_id, CURATED)

    def train_split(self, job_id: str) -> Path:
        return self.curated_dir(job_id) / TRAIN_SPLIT

    def test_split(self, job_id: str) -> Path:
        return self.curated_dir(job_id) / TEST_SPLIT

    def embedding_cache_dir(self) -> Path:
        """MiniLM embeddings by text hash, shared by every job on this node."""
        return self.root / "cache" / "embeddings"

    def adapter_dir(self, job_id: str) -> Path:
        return self.stage_dir(job_id, ADAPTER)

    def checkpoints_dir(self, job_id: str) -> Path:
        return self.stage_dir(job_id, CHECKPOINTS)

    def source_dir(self, job_id: str, source_job: str) -> Path:
        """Where job `job_id` keeps the adapter of merge source `source_job`, fetched from its registry."""
        return self.stage_dir(job_id, SOURCES) / source_job

    def merged_dir(self, job_id: str) -> Path:
        return self.stage_dir(job_id, MERGED)

    def champion_dir(self, job_id: str) -> Path:
        """Where job `job_id`'s exam keeps the champion's tag (`exam.champion`), fetched from its registry for the exam."""
        return self.stage_dir(job_id, CHAMPION)

    def exam_report_path(self, job_id: str) -> Path:
        return self.stage_dir(job_id, EXAM) / EXAM_REPORT

    def staging_dir(self, job_id: str, tag: str) -> Path:
        """Where the artifact for registry tag `tag` is assembled before its push (removed once verified)."""
        return self.stage_dir(job_id, STAGING) / tag

    def weight_dirs(self, job_id: str) -> list[Path]:
        """The job's weight folders on this node (see `WEIGHT_STAGES`), and hidden leftovers of interrupted writes
        beside them (`.merged.work-…`, `.adapter.old-…`)."""
        job_dir, found = self.job_dir(job_id), []
        for stage in WEIGHT_STAGES:
            if (job_dir / stage).is_dir():
                found.append(job_dir / stage)
            if job_dir.is_dir():
                found += sorted(p for p in job_dir.glob(f".{stage}.*") if p.is_dir())
        return found

    def remove_weights(self, job_id: str) -> RemovedWeights:
        """Remove every weight folder of the job (records stay); call only after its artifact is verified published.

        A folder that cannot be removed is reported in `failed` (the others are still removed), never ignored.
        """
        freed, failed = {}, {}
        for folder in self.weight_dirs(job_id):
            size = _size(folder)
            try:
                shutil.rmtree(folder)
            except OSError as e:
                failed[folder.name] = str(e)
            else:
                freed[folder.name] = size
        return RemovedWeights(freed, failed)

    def lock_path(self, job_id: str, what: str) -> Path:
        """The lock file that serializes `what` (e.g. "publish") for one job across processes."""
        return self.root / "locks" / f"{job_id}.{what}.lock"

    def manifest_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "manifest.yaml"

    def audit_path(self, job_id: str) -> Path:
        return self.root / "audit" / f"{job_id}.jsonl"

    def register(self, manifest: TrainingManifest) -> Path:
        """Store a validated manifest (relative paths already resolved) as the job's definition.

        A job_id that is already registered with a different manifest is refused: a partition means one job.
        """
        path = self.manifest_path(manifest.job_id)
        text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)
        if path.exists():
            current = load_manifest(path, resolve_paths=False)
            if current.canonical_json() != manifest.canonical_json():
                raise ManifestError(
                    f"job_id {manifest.job_id!r} is already registered with a different manifest ({path}); "
                    "give the new job its own job_id."
                )
            return path
        return write_text(path, text)

    def load(self, job_id: str) -> TrainingManifest:
        path = self.manifest_path(job_id)
        if not path.exists():
            raise ManifestError(
                f"No manifest is registered for job {job_id!r} (looked for {path}); "
                "add the job with `foundry run MANIFEST` or a drop sensor."
            )
        return load_manifest(path, resolve_paths=False)
