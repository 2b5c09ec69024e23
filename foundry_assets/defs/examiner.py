"""Examine: decontamination and metrics of the merged model against the base model (the champion and the merge
sources, when there are), and the blocking gate."""

from typing import Any

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.defs.common import failure, job_context, stage_asset, table
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import (
    AuditTrailResource,
    GpuResource,
    PublisherResource,
    WorkspaceResource,
)
from foundry_assets.errors import FoundryError
from foundry_assets.examiner.report import ExamReport
from foundry_assets.examiner.stage import examine_job
from foundry_assets.stages import CuratedDataset, ExamResult, MergedModel


def _metric_numbers(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """`<metric>_baseline`, `<metric>_candidate` (`<metric>_champion`, `<metric>_source_<job_id>` and
    `<metric>_retention_result` when the exam had them), `<metric>_required`, `<metric>_result` for every row."""
    numbers: dict[str, Any] = {}
    for row in metrics:
        for side in ("baseline", "champion", "candidate"):
            if row.get(side) is not None:
                numbers[f"{row['name']}_{side}"] = float(row[side])
        for job_id, value in (row.get("sources") or {}).items():
            if value is not None:
                numbers[f"{row['name']}_source_{job_id}"] = float(value)
        numbers[f"{row['name']}_required"] = row["required"]
        if row.get("retention_result"):
            numbers[f"{row['name']}_retention_result"] = row["retention_result"]
        numbers[f"{row['name']}_result"] = row["result"]
    return numbers


def _metrics_table(rows: list[dict[str, Any]], champion: bool, sources: list[str]) -> dg.TableMetadataValue:
    """The metric rows as the UI's table; with a champion, its value and what the candidate needed against it; with
    merge sources, each source's value (`source_<job_id>`) and what the candidate needed to keep."""
    columns = ["name", "baseline", *(["champion"] if champion else []), *(f"source_{j}" for j in sources)]
    columns += ["candidate", "required", *(["champion_required"] if champion else [])]
    columns += [*(["retention_required"] if sources else []), "result"]

    def cell(row: dict[str, Any], column: str) -> Any:
        if column.startswith("source_") and column.removeprefix("source_") in sources:
            return (row.get("sources") or {}).get(column.removeprefix("source_"))
        return row.get(column)

    return table(columns, [[cell(row, c) for c in columns] for row in rows])


def _had_to_beat(value: ExamResult) -> str:
    """What the candidate was compared with: the base, the champion, the merge sources' gated rates."""
    text = "the base model" + (f" and the {value.champion['label']}" if value.champion else "")
    if value.sources:
        jobs = ", ".join(repr(s["job_id"]) for s in value.sources)
        share = value.source_retention or 0.0
        text += (
            f", and keep {share * 100:g}% of the best merge source's gated rates (jobs {jobs})"
            if share
            else f"; merge sources (jobs {jobs}) reported, not compared (exam.source_retention 0)"
        )
    return text


def _exam_metadata(value: ExamResult, report: ExamReport, *, gpu: str, head: str) -> dict[str, Any]:
    """What the UI shows of an exam: the verdict, the tables, every number on its own, where and how long it ran."""
    return {
        "lot_number": value.lot_number,
        "passed": value.passed,
        "report": dg.MetadataValue.md(value.markdown),
        "safety_prompts": dg.MetadataValue.md(report.safety_markdown()),
        "metrics": _metrics_table(
            value.metrics, value.champion is not None, [str(s["job_id"]) for s in value.sources]
        ),
        "champion": value.champion["label"] if value.champion else "none: the base model only",
        "had_to_beat": _had_to_beat(value),
        **_metric_numbers(value.metrics),  # each number on its own: the UI plots them across partitions
        "reasons": dg.MetadataValue.json(value.reasons),
        "contaminated_test_items": dg.MetadataValue.json(report.contamination.get("contaminated", [])),
        "report_path": dg.MetadataValue.path(str(value.report_path)),
        "device": report.device,
        "gpu": gpu,
        "device_name": report.device_name,
        "dtype": report.dtype,
        "baseline_seconds": report.baseline_seconds,
        "candidate_seconds": report.candidate_seconds,
        **{f"source_{s['job_id']}_seconds": float(s["seconds"]) for s in report.sources},
        "audit_head": head,
    }


@stage_asset("examiner", kinds={"json"})
def exam_report(
    context: dg.AssetExecutionContext,
    curated_dataset: CuratedDataset,
    merged_model: MergedModel,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    gpu: GpuResource,
    publisher: PublisherResource,
) -> dg.Output[ExamResult]:
    """The exam: contamination, held-out loss, logic score and safety rate of the merged model against the base (and the
    champion, when the manifest names one)."""
    job = job_context(context, workspace, audit_trail)
    try:  # compute.device "cuda" on a node without one is a HardwareIncompatibleError: a Failure without retries
        value = examine_job(  # the champion, if any, comes from its registry through the publisher's clients
            job.manifest,
            curated_dataset,
            merged_model,
            job.workspace,
            trail_for=audit_trail.trail,
            fetch=publisher.fetch,
        )
    except (OSError, FoundryError) as e:
        raise failure(e, "exam") from e
    report = ExamReport.from_dict(value.report)
    head = job.audit(Event.EXAM_VERDICT, **value.verdict_record())
    context.log.info(
        f"Exam ran on {report.device} ({report.device_name}) in {report.dtype}: base "
        f"{report.baseline_seconds:.1f} s, candidate {report.candidate_seconds:.1f} s"
        + "".join(f", source {s['job_id']!r} {s['seconds']:.1f} s" for s in report.sources)
        + (f"; also against the {value.champion['label']}" if value.champion else "")
    )
    (context.log.info if value.passed else context.log.error)(
        "Exam passed" if value.passed else f"Exam failed: {'; '.join(value.reasons)}"
    )
    return dg.Output(value, metadata=_exam_metadata(value, report, gpu=gpu.gpu, head=head))


@dg.asset_check(asset=exam_report, blocking=True, partitions_def=job_partitions)
def exam_report_passes_gate(exam_report: ExamResult) -> dg.AssetCheckResult:
    """Blocks publishing unless every gated metric passed (base, champion, sources kept) and the split is clean."""
    return dg.AssetCheckResult(
        passed=exam_report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(exam_report.reasons) or "all gate criteria met",
        metadata={
            "lot_number": exam_report.lot_number,
            "reasons": dg.MetadataValue.json(exam_report.reasons),
            "gate": ", ".join(exam_report.gate),
            "had_to_beat": _had_to_beat(exam_report),
            "report": dg.MetadataValue.md(exam_report.markdown),
            **_metric_numbers(exam_report.metrics),
        },
    )
