"""The drop sensor: a new drop adds its `job_id` partition and requests one run of `foundry_job`."""

import os
import time

import dagster as dg

from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import PublisherResource, WorkspaceResource
from foundry_assets.intake.drops import drop_source
from foundry_assets.intake.ledger import DropLedger, DropRejection
from foundry_assets.intake.receive import DROP_SHA256_TAG

DROP_LOCATION_ENV = "FOUNDRY_DROP_LOCATION"
"""Where drops appear: a folder, file:///folder or s3://bucket/prefix; default `<workspace>/inbox`."""

MAX_DROPS_PER_TICK = 20
"""Drops received per evaluation; the rest wait for the next tick, so one tick stays short."""

TICK_SECONDS = 20.0
"""Time one tick spends on drops before leaving the rest to the next (checked before each drop, at least one is
evaluated): Dagster gives a sensor evaluation 60 s, and a tick that times out stores no cursor, so slow drops
(a 64 KiB manifest costs up to ~2 s of YAML parsing) would be evaluated again on every tick and none received."""


@dg.sensor(
    job_name="foundry_job",
    minimum_interval_seconds=30,
    description=(
        "Watches FOUNDRY_DROP_LOCATION (a folder, or s3://bucket/prefix through the publisher's S3 resource) for "
        "drops: folders holding manifest.yaml and its data. A valid drop gets its job_id partition and one run "
        "(run key = job_id@content hash), whose first step receives and registers it; an invalid one is logged "
        "once (its reason kept in the cursor) and left alone until its files change. Evaluating writes nothing, "
        "so 'Preview tick result' is a dry run."
    ),
)
def drop_sensor(
    context: dg.SensorEvaluationContext, workspace: WorkspaceResource, publisher: PublisherResource
) -> dg.SensorResult:
    """Turns each new drop into its partition and one run request; writes nothing itself."""
    ws = workspace.workspace
    location = os.environ.get(DROP_LOCATION_ENV) or str(ws.inbox_dir())
    source = drop_source(location, workspace=ws, s3_client=publisher.s3.get_client)
    ledger = DropLedger.loads(context.cursor)
    refs = source.list_drops()
    ledger.forget_missing({ref.name for ref in refs})

    new_partitions: list[str] = []
    run_requests: list[dg.RunRequest] = []
    rejected: list[str] = []
    started = time.monotonic()
    for index, ref in enumerate([ref for ref in refs if not ledger.is_handled(ref)][:MAX_DROPS_PER_TICK]):
        if index and time.monotonic() - started > TICK_SECONDS:
            break  # the rest next tick
        drop = ledger.evaluate(source, ref, ws)
        if isinstance(drop, DropRejection):
            again = " (tried again next tick)" if drop.retry else ""
            rejected.append(f"{ref.name}: {drop.reason}{again}")
            skipped = "Could not fetch" if drop.retry else "Skipped invalid"
            context.log.warning(f"{skipped} drop {ref.name!r} ({ref.location}){again}: {drop.reason}")
            continue
        if drop.run_key in {r.run_key for r in run_requests}:
            continue
        if drop.job_id not in new_partitions and not context.instance.has_dynamic_partition(
            str(job_partitions.name), drop.job_id
        ):
            new_partitions.append(drop.job_id)
        run_requests.append(
            dg.RunRequest(
                partition_key=drop.job_id,
                run_key=drop.run_key,
                run_config={"ops": {"raw_data": {"config": {"drop": ref.location}}}},
                tags={"foundry/drop": ref.name, DROP_SHA256_TAG: drop.content_sha256},
            )
        )
        context.log.info(f"Drop {ref.name!r} requested as job {drop.job_id} (run key {drop.run_key})")

    skip_reason = None
    if not run_requests:
        skip_reason = f"No new drops in {source.describe()}" + (
            f"; skipped {len(rejected)} invalid: " + " | ".join(rejected) if rejected else ""
        )
    add = [job_partitions.build_add_request(new_partitions)] if new_partitions else []
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=add,
        cursor=ledger.dumps(),
        skip_reason=skip_reason,
    )
