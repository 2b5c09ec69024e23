"""What every stage asset shares: the job's manifest and lot number, audit records, metadata conventions."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from foundry_assets.actor import Actor, current_actor, run_actor
from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.manifest import TrainingManifest
from foundry_assets.workspace import Workspace

OWNERS = ["team:ml-platform"]
"""Who answers for the foundry's assets (shown in the UI's catalog, filterable)."""
STAGE_TAGS = {"compliance": "gxp", "product": "model-foundry"}
"""Every stage feeds the GxP lot; the catalog filters on these."""


def stage_asset(
    group: str, *, kinds: set[str], **options: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """The asset decorator of a stage: partitioned by job, in the stage's group (named as its package), with the
    foundry's owners and tags; `options` are passed on to `dg.asset` (e.g. `pool="gpu"`)."""
    return dg.asset(
        partitions_def=job_partitions,
        group_name=group,
        kinds=kinds,
        owners=OWNERS,
        tags=STAGE_TAGS,
        **options,
    )


@dataclass
class JobContext:
    """The partition's job: its manifest, workspace and audit trail, and who the run acts for."""

    job_id: str
    manifest: TrainingManifest
    workspace: Workspace
    trail: AuditTrail
    actor: Actor
    """From the run's tags (`actor.run_actor`), with the run's id: every record the run writes names it."""

    def audit(self, event: Event, **data: Any) -> str:
        """Append an audit record as the run's actor; returns the new head hash (recorded in asset metadata). A
        stage's `reason` (why a step was refused) stays in the record's data."""
        return str(self.trail.write(event, job_id=self.job_id, data=data, actor=self.actor)["sha256"])


def job_context(
    context: dg.AssetExecutionContext, workspace: WorkspaceResource, audit_trail: AuditTrailResource
) -> JobContext:
    job_id = context.partition_key
    try:
        manifest = workspace.manifest(job_id)
    except FoundryError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from e
    try:
        actor = run_actor(context.run_id, context.run.tags)
    except dg.DagsterError:  # invoked directly (a unit test, a notebook): no run, so the process's actor
        actor = current_actor()
    return JobContext(job_id, manifest, workspace.workspace, audit_trail.trail(job_id), actor)


def table(columns: list[str], rows: list[list[Any]]) -> dg.TableMetadataValue:
    """Rows for the UI's table view (typed columns, sortable), in place of JSON or markdown in asset metadata."""

    def cell(value: Any) -> str | int | float | bool | None:
        return value if value is None or isinstance(value, str | int | float | bool) else str(value)

    kinds = {bool: "bool", int: "int", float: "float"}
    first = rows[0] if rows else [None] * len(columns)
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: cell(v) for c, v in zip(columns, row, strict=True)}) for row in rows],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(c, kinds.get(type(v), "string")) for c, v in zip(columns, first, strict=True)
            ]
        ),
    )


def file_hashes(files: dict[str, str]) -> dg.TableMetadataValue:
    """A folder's files and their SHA256, as recorded in the audit trail."""
    return table(["file", "sha256"], [[name, digest] for name, digest in sorted(files.items())])


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
