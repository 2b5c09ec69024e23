"""Examine: decontamination and held-out metrics against the base model, and the blocking gate."""

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from foundry_assets.curator.formats import eval_text
from foundry_assets.defs.common import failure, job_context, lot_metadata
from foundry_assets.defs.partitions import job_partitions
from foundry_assets.defs.resources import AuditTrailResource, WorkspaceResource
from foundry_assets.errors import FoundryError
from foundry_assets.examiner import examine


def _texts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [eval_text(json.loads(line)) for line in handle if line.strip()]


@dg.asset(partitions_def=job_partitions, group_name="examine", kinds={"json"})
def exam_report(
    context: dg.AssetExecutionContext,
    curated_dataset: dict[str, Any],
    merged_model: dict[str, Any],
    workspace: WorkspaceResource,
    audit_trail: AuditTrailResource,
) -> dg.Output[dict[str, Any]]:
    """The exam: n-gram contamination and held-out loss of the merged model against the base model."""
    job = job_context(context, workspace, audit_trail)
    exam = job.manifest.exam
    try:
        report = examine(
            base_model=Path(merged_model["base_model"]),
            candidate_model=Path(merged_model["model_dir"]),
            train_texts=_texts(curated_dataset["train_path"]),
            test_texts=_texts(curated_dataset["test_path"]),
            ngram_size=exam.ngram_size,
            max_contamination=exam.max_contamination,
            min_loss_improvement=exam.min_loss_improvement,
            max_items=exam.max_eval_items,
            max_length=job.manifest.method_config.max_seq_length,
        )
    except FoundryError as e:
        raise failure(e, "exam") from e
    document = {**report.to_dict(), "job_id": job.job_id, **lot_metadata(merged_model)}
    out = Path(job.stage_dir("exam"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "exam_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    head = job.audit("exam_verdict", passed=report.passed, reasons=report.reasons, report=report.to_dict())
    (context.log.info if report.passed else context.log.error)(
        "Exam passed" if report.passed else f"Exam failed: {'; '.join(report.reasons)}"
    )
    value = {**document, "report_path": str(path)}
    return dg.Output(
        value,
        metadata={
            **lot_metadata(merged_model),
            "passed": report.passed,
            "report": dg.MetadataValue.md(report.to_markdown()),
            "reasons": dg.MetadataValue.json(report.reasons),
            "report_path": dg.MetadataValue.path(str(path)),
            "audit_head": head,
        },
    )


@dg.asset_check(asset=exam_report, blocking=True, partitions_def=job_partitions)
def exam_report_passes_gate(exam_report: dict[str, Any]) -> dg.AssetCheckResult:
    """Blocks publishing unless the candidate beat the baseline and the test split is clean."""
    numbers = {
        f"{row['name']}_{side}": float(row[side])
        for row in exam_report.get("metrics", [])
        for side in ("baseline", "candidate")
        if row.get(side) is not None
    }
    return dg.AssetCheckResult(
        passed=bool(exam_report["passed"]),
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(exam_report["reasons"]) or "all gate criteria met",
        metadata={
            "lot_number": exam_report["lot_number"],
            "reasons": dg.MetadataValue.json(exam_report["reasons"]),
            **numbers,
        },
    )
