"""Where a job's files live: its registered manifest, its stage outputs and its audit trail."""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from foundry_assets.errors import ManifestError
from foundry_assets.manifest import TrainingManifest, load_manifest


def default_root() -> Path:
    """FOUNDRY_HOME, else `foundry/` inside DAGSTER_HOME, else `.foundry` in the working folder."""
    if home := os.environ.get("FOUNDRY_HOME"):
        return Path(home)
    if dagster_home := os.environ.get("DAGSTER_HOME"):
        return Path(dagster_home) / "foundry"
    return Path(".foundry").resolve()


@dataclass(frozen=True)
class Workspace:
    """The foundry's folder: `jobs/<job_id>/manifest.yaml`, `jobs/<job_id>/<stage>/`, `audit/<job_id>.jsonl`."""

    root: Path

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def stage_dir(self, job_id: str, stage: str) -> Path:
        return self.job_dir(job_id) / stage

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
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return path

    def load(self, job_id: str) -> TrainingManifest:
        path = self.manifest_path(job_id)
        if not path.exists():
            raise ManifestError(
                f"No manifest is registered for job {job_id!r} (looked for {path}); "
                "add the job with `foundry run MANIFEST` or a drop sensor."
            )
        return load_manifest(path, resolve_paths=False)
