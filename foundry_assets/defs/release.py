"""The release sensor: once a job waiting for QA approval (`release.require_approval`) has the valid signatures its
manifest asks for, it requests one run of `published_artifact` for that job's partition. Evaluating writes nothing;
the publish step decides again from the trail (`release.gate`), so a signature that stops counting in between (a new
exam, a `reject`) still stops the publish."""

import dagster as dg

from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import WorkspaceResource


@dg.sensor(
    job_name="foundry_job",
    minimum_interval_seconds=30,
    description=(
        "Starts the publish of a job whose release waits for QA approval (release_pending in its audit trail) once "
        "its current release has the distinct valid signatures `release.signers` asks for (`foundry sign`); one run "
        "per set of approvals (run key = lot + signature records)."
    ),
)
def release_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource) -> dg.SensorResult:
    """One `published_artifact` run request per approved release; writes nothing itself."""
    from foundry_assets.release.gate import awaiting_release  # cryptography loads in the tick only

    job_ids = context.instance.get_dynamic_partitions(str(job_partitions.name))
    requests = [
        dg.RunRequest(
            partition_key=job_id,
            run_key=f"{job_id}:{decision.run_key}",
            asset_selection=[dg.AssetKey("published_artifact")],
            tags={"foundry/release": decision.detail[:200]},
        )
        for job_id, decision in awaiting_release(workspace.workspace, list(job_ids))
    ]
    for request in requests:
        context.log.info(
            f"Release approved: publishing job {request.partition_key} (run key {request.run_key})"
        )
    return dg.SensorResult(
        run_requests=requests,
        skip_reason=None if requests else "No approved release is waiting to be published",
    )
