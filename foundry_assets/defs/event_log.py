"""Read a job's chain from the Dagster event log as plain dicts, for the auditor's report (`audit_report.py`)."""

from typing import Any

import dagster as dg

from foundry_assets.audit_events import STAGE_EVENTS


def _plain(value: Any) -> Any:
    if isinstance(value, dg.TableMetadataValue):  # a table's rows, each a {column: value} dict
        return [dict(record.data) for record in value.records]
    value = getattr(value, "value", value)
    return value if isinstance(value, str | int | float | bool | list | dict | None) else str(value)


def job_event_log(
    instance: dg.DagsterInstance, job_id: str
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(asset → latest materialization of the job's partition, check → its latest evaluation for the partition)."""
    materializations: dict[str, dict[str, Any]] = {}
    for asset in STAGE_EVENTS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[job_id]), limit=1
        ).records
        if records and records[0].asset_materialization is not None:
            metadata = records[0].asset_materialization.metadata
            materializations[asset] = {
                "run_id": records[0].run_id,
                "timestamp": records[0].timestamp,
                "metadata": {key: _plain(value) for key, value in metadata.items()},
            }
    checks: dict[str, dict[str, Any]] = {}
    exam_run = materializations.get("exam_report", {}).get("run_id")
    if exam_run:  # the blocking check runs in the same run as the asset it checks
        for entry in instance.all_logs(exam_run, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
            evaluation = entry.dagster_event.event_specific_data if entry.dagster_event else None
            if isinstance(evaluation, dg.AssetCheckEvaluation) and evaluation.partition in (None, job_id):
                checks[evaluation.check_name] = {
                    "run_id": exam_run,
                    "passed": evaluation.passed,
                    "metadata": {key: _plain(value) for key, value in evaluation.metadata.items()},
                }
    return materializations, checks
