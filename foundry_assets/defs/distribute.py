"""Distribute: stage the artifact, push it to the manifest's registry, verify, record, then remove staging."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.defs.common import failure, job_context, lot_metadata
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, PublisherResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.publisher import PublishResult, deployment_payload, stage_artifact


@dg.asset(partitions_def=job_partitions, group_name="distribute", kinds={"folder"})
def published_artifact(
    context: dg.AssetExecutionContext,
    exam_report: dict[str, Any],
    merged_model: dict[str, Any],
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    publisher: PublisherResource,
) -> Iterator[dg.Output[dict[str, Any]]]:
    """The verified artifact in the registry: weights, manifest, exam report, model card and MANIFEST.sha256."""
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
    staging = stage_artifact(
        source,
        Path(job.stage_dir("staging")) / target.tag,
        kind=kind,
        manifest_dict=job.manifest.model_dump(mode="json"),
        exam_report_dict=exam_report,
    )

    heads: list[str] = []

    def record(result: PublishResult) -> None:  # after verification, before staging is removed
        heads.append(
            job.audit(
                "published",
                uri=result.uri,
                tag=result.tag,
                status=result.status,
                artifact=kind,
                artifact_sha256=result.artifact_sha256,
                files=result.files,
            )
        )

    try:
        result = publisher.push(staging, target.tag, registry=target.registry, on_verified=record)
    except FoundryError as e:
        job.audit("publish_failed", registry=target.registry, tag=target.tag, reason=str(e))
        raise failure(e, "publish") from e
    context.log.info(f"Published {kind} of job {job.job_id} to {result.uri} ({result.status})")
    yield dg.Output(
        {**lot_metadata(exam_report), **result.to_metadata(), "artifact": kind},
        metadata={
            **lot_metadata(exam_report),
            "uri": dg.MetadataValue.url(result.uri),
            "tag": result.tag,
            "status": result.status,
            "artifact": kind,
            "artifact_sha256": result.artifact_sha256,
            "files": dg.MetadataValue.json(result.files),
            "audit_head": heads[-1],
        },
    )
    if target.trigger_deployment and target.webhook_url:
        payload = deployment_payload(result, lot_number=exam_report["lot_number"], job_id=job.job_id)
        try:
            delivery = publisher.notify(target.webhook_url, payload)
        except FoundryError as e:
            # The artifact stays published; the failed notice fails this step so an operator sees it.
            job.audit("deployment_notice_failed", uri=result.uri, reason=str(e))
            raise failure(e, "deployment notice") from e
        job.audit("deployment_notified", **delivery.to_metadata())
        context.log.info(
            f"Deployment notice delivered ({delivery.status_code}, {delivery.attempts} attempt(s))"
        )
