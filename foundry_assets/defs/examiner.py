"""Examine: decontamination and metrics of the merged model against the base model, and the blocking gate."""

from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.audit_events import Event
from foundry_assets.curator.formats import eval_text
from foundry_assets.defs.common import OWNERS, STAGE_TAGS, failure, job_context, table
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, GpuResource, WorkspaceResource
from foundry_assets.devices import resolve_device
from foundry_assets.errors import FoundryError
from foundry_assets.examiner import examine, task_items
from foundry_assets.fsio import read_jsonl, write_json
from foundry_assets.stages import CuratedDataset, ExamResult, MergedModel


def _metric_numbers(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """`<metric>_baseline`, `<metric>_candidate`, `<metric>_result` for every row of the report."""
    numbers: dict[str, Any] = {}
    for row in metrics:
        for side in ("baseline", "candidate"):
            if row.get(side) is not None:
                numbers[f"{row['name']}_{side}"] = float(row[side])
        numbers[f"{row['name']}_required"] = row["required"]
        numbers[f"{row['name']}_result"] = row["result"]
    return numbers


def _metrics_table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    columns = ["name", "baseline", "candidate", "required", "result"]
    return table(columns, [[row.get(c) for c in columns] for row in rows])


@dg.asset(
    partitions_def=job_partitions,
    group_name="examiner",
    kinds={"json"},
    owners=OWNERS,
    tags=STAGE_TAGS,
)
def exam_report(
    context: dg.AssetExecutionContext,
    curated_dataset: CuratedDataset,
    merged_model: MergedModel,
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
    gpu: GpuResource,
) -> dg.Output[ExamResult]:
    """The exam: contamination, held-out loss, logic score and safety rate of the merged model against the base."""
    job = job_context(context, workspace, audit_trail)
    exam = job.manifest.exam
    try:
        # compute.device "cuda" on a node without one is a HardwareIncompatibleError: a Failure without retries
        device = resolve_device(job.manifest.compute.device)
        test_rows = read_jsonl(curated_dataset.test_path)
        logic, safety = task_items(test_rows)
        train_texts = [eval_text(r) for r in read_jsonl(curated_dataset.train_path)]
        for path in merged_model.source_train_paths:  # a merge job's model saw its sources' data too
            train_texts += [eval_text(r) for r in read_jsonl(path)]
        report = examine(
            base_model=Path(merged_model.base_model),
            candidate_model=merged_model.model_dir,
            train_texts=train_texts,
            test_texts=[eval_text(r) for r in test_rows],
            logic_items=logic,
            safety_prompts=safety,
            gate=exam.gate,
            ngram_size=exam.ngram_size,
            max_contamination=exam.max_contamination,
            min_loss_improvement=exam.min_loss_improvement,
            min_logic_improvement=exam.min_logic_improvement,
            min_safety_improvement=exam.min_safety_improvement,
            refusal_patterns=exam.refusal_patterns,
            max_new_tokens=exam.max_new_tokens,
            max_items=exam.max_eval_items,
            max_length=job.manifest.method_config.max_seq_length,
            device=device,
        )
    except (OSError, FoundryError) as e:
        raise failure(e, "exam") from e
    report_dict = report.to_dict()
    path = job.workspace.exam_report_path(job.job_id)
    value = ExamResult(
        lot_number=merged_model.lot_number,
        job_id=job.job_id,
        passed=report.passed,
        reasons=list(report.reasons),
        gate=list(report.gate),
        report=report_dict,
        markdown=report.to_markdown(),
        report_path=path,
        source_jobs=merged_model.source_jobs,
    )
    document = value.document()
    write_json(path, document, indent=2, sort_keys=True)
    summary = report_dict["metrics"]
    head = job.audit(
        Event.EXAM_VERDICT,
        passed=report.passed,
        reasons=report.reasons,
        metrics=summary,
        report=report_dict,
        lot_number=merged_model.lot_number,
    )
    context.log.info(
        f"Exam ran on {report.device} ({report.device_name}) in {report.dtype}: base "
        f"{report.baseline_seconds:.1f} s, candidate {report.candidate_seconds:.1f} s"
    )
    (context.log.info if report.passed else context.log.error)(
        "Exam passed" if report.passed else f"Exam failed: {'; '.join(report.reasons)}"
    )
    return dg.Output(
        value,
        metadata={
            "lot_number": merged_model.lot_number,
            "passed": report.passed,
            "report": dg.MetadataValue.md(report.to_markdown()),
            "safety_prompts": dg.MetadataValue.md(report.safety_markdown()),
            "metrics": _metrics_table(summary),
            **_metric_numbers(value.metrics),  # each number on its own: the UI plots them across partitions
            "reasons": dg.MetadataValue.json(report.reasons),
            "contaminated_test_items": dg.MetadataValue.json(report.contamination.get("contaminated", [])),
            "report_path": dg.MetadataValue.path(str(path)),
            "device": report.device,
            "gpu": gpu.gpu,
            "device_name": report.device_name,
            "dtype": report.dtype,
            "baseline_seconds": report.baseline_seconds,
            "candidate_seconds": report.candidate_seconds,
            "audit_head": head,
        },
    )


@dg.asset_check(asset=exam_report, blocking=True, partitions_def=job_partitions)
def exam_report_passes_gate(exam_report: ExamResult) -> dg.AssetCheckResult:
    """Blocks publishing unless every gated metric beat the baseline and the test split is clean."""
    return dg.AssetCheckResult(
        passed=exam_report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(exam_report.reasons) or "all gate criteria met",
        metadata={
            "lot_number": exam_report.lot_number,
            "reasons": dg.MetadataValue.json(exam_report.reasons),
            "gate": ", ".join(exam_report.gate),
            "report": dg.MetadataValue.md(exam_report.markdown),
            **_metric_numbers(exam_report.metrics),
        },
    )
