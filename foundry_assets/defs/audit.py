"""The auditor's view in the UI: once a job is published, its whole chain cross-checked, on the job's partition.

`foundry audit report JOB_ID` needs a shell on the instance's machine; this check runs the same report (`audit_report.py`
over the audit trail and the Dagster event log) after `published_artifact` in every run, and shows its verdict, the
report and the registered manifest on the partition's check result — an auditor reads it in the UI.
"""

import dagster as dg
import yaml

from foundry_assets.audit_report import build_report
from foundry_assets.defs.event_log import job_event_log
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.publisher import published_artifact
from foundry_assets.defs.resources import AuditTrailResource, WorkspaceResource


@dg.asset_check(
    asset=published_artifact,
    partitions_def=job_partitions,
    description="The job's chain (lot, curation, training, merge, exam, publish) agrees between the audit trail and "
    "the Dagster event log, and the trail's hash chain holds; the report and the manifest are in the metadata.",
)
def published_artifact_audit_consistent(
    context: dg.AssetCheckExecutionContext, workspace: WorkspaceResource, audit_trail: AuditTrailResource
) -> dg.AssetCheckResult:
    job_id = context.partition_key
    manifest = workspace.manifest(job_id)
    materializations, checks = job_event_log(context.instance, job_id)
    report = build_report(
        job_id,
        manifest=manifest,
        trail_path=audit_trail.trail(job_id).path,
        materializations=materializations,
        checks=checks,
    )
    manifest_yaml = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False)
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description=report.verdict(),
        metadata={
            "verdict": report.verdict(),
            "problems": dg.MetadataValue.json(report.problems),
            "report": dg.MetadataValue.md(report.to_markdown()),
            "manifest": dg.MetadataValue.md(f"```yaml\n{manifest_yaml}```"),
        },
    )
