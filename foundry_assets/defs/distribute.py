"""Distribute: stage the artifact, push it to the manifest's registry, verify, then remove staging."""

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from foundry_assets.defs.common import failure, job_context, lot_metadata
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError


@dg.asset(partitions_def=job_partitions, group_name="distribute", kinds={"folder"})
def published_artifact(
    context: dg.AssetExecutionContext,
    exam_report: dict[str, Any],
    merged_model: dict[str, Any],
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> dg.Output[dict[str, Any]]:
    """The verified artifact in the registry (adapter or merged model, manifest, exam report, MANIFEST.sha256)."""
    job = job_context(context, workspace, audit_trail)
    # The blocking check stops this step inside one run; this guard holds the gate across runs as well.
    if not exam_report.get("passed"):
        job.audit("publish_refused", reasons=exam_report.get("reasons", []))
        raise dg.Failure(
            description=f"Exam for job {job.job_id} did not pass; nothing is published: "
            + "; ".join(exam_report.get("reasons", [])),
            allow_retries=False,
        )
    if exam_report.get("lot_number") != merged_model.get("lot_number"):
        raise dg.Failure(
            description="exam_report and merged_model come from different lots; re-run the exam."
        )
    target = job.manifest.publish_target
    kind = target.artifact
    if kind == "auto":
        kind = "merged_model" if job.manifest.merge.sources else "adapter"
    source = Path(merged_model["model_dir"] if kind == "merged_model" else merged_model["adapter_dir"])

    staging = Path(job.stage_dir("staging")) / target.tag
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging / kind)
    (staging / "manifest.yaml").write_text(
        yaml.safe_dump(job.manifest.model_dump(mode="json"), sort_keys=False), encoding="utf-8"
    )
    report = {k: v for k, v in exam_report.items() if k != "report_path"}
    (staging / "exam_report.json").write_text(json.dumps(report, indent=2, sort_keys=True), encoding="utf-8")
    try:
        result = publisher.push(staging, target.tag, registry=target.registry)
    except FoundryError as e:
        job.audit("publish_failed", registry=target.registry, tag=target.tag, reason=str(e))
        raise failure(e, "publish") from e
    head = job.audit(
        "published",
        uri=result.uri,
        tag=result.tag,
        status=result.status,
        artifact=kind,
        artifact_sha256=result.artifact_sha256,
        files=result.files,
    )
    context.log.info(f"Published {kind} of job {job.job_id} to {result.uri} ({result.status})")
    value = {**lot_metadata(exam_report), **result.to_metadata(), "artifact": kind}
    return dg.Output(
        value,
        metadata={
            **lot_metadata(exam_report),
            "uri": dg.MetadataValue.url(result.uri),
            "tag": result.tag,
            "status": result.status,
            "artifact": kind,
            "artifact_sha256": result.artifact_sha256,
            "files": dg.MetadataValue.json(result.files),
            "audit_head": head,
        },
    )
