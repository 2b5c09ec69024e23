"""What every stage asset shares: the job's manifest and lot number, audit records, metadata conventions."""

from dataclasses import dataclass
from typing import Any

import dagster as dg

from foundry_assets.audit import AuditTrail
from foundry_assets.defs.resources import AuditTrailResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.manifest import TrainingManifest
from foundry_assets.workspace import Workspace

STAGE_GROUPS = {
    "raw_data": "select",
    "curated_dataset": "prune",
    "trained_adapter": "train",
    "merged_model": "merge",
    "exam_report": "examine",
    "published_artifact": "distribute",
}


@dataclass
class JobContext:
    """The partition's job: its manifest, workspace and audit trail."""

    job_id: str
    manifest: TrainingManifest
    workspace: Workspace
    trail: AuditTrail

    def audit(self, event: str, **data: Any) -> str:
        """Append an audit record; returns the new head hash (recorded in asset metadata)."""
        return str(self.trail.append(event, job_id=self.job_id, **data)["sha256"])

    def stage_dir(self, stage: str) -> Any:
        return self.workspace.stage_dir(self.job_id, stage)


def job_context(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, audit_trail: AuditTrailResource
) -> JobContext:
    job_id = context.partition_key
    try:
        manifest = workspace.manifest(job_id)
    except FoundryError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    return JobContext(job_id, manifest, workspace.workspace, audit_trail.trail(job_id))


def lot_metadata(upstream: dict[str, Any]) -> dict[str, Any]:
    """The lot number travels with every stage's output and metadata, from raw_data on."""
    return {"lot_number": upstream["lot_number"]}


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def failure(error: Exception, step: str) -> dg.Failure:
    """A library or domain failure as a Dagster failure whose description names the step."""
    return dg.Failure(description=f"{step}: {error}", allow_retries=not isinstance(error, FoundryError))
