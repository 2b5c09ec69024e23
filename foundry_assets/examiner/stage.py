"""The examiner's stage: one job's merged model examined against its base (its champion, when the manifest names one,
and a merge job's source adapters), the report written, the verdict returned.

No Dagster here: the `exam_report` asset calls `examine_job`, and so can a CLI or a notebook.
"""

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from foundry_assets.audit import AuditTrail
from foundry_assets.curator.contamination import content_text
from foundry_assets.devices import resolve_device
from foundry_assets.errors import ExamError
from foundry_assets.examiner.champion import Champion, Fetcher, resolve_champion
from foundry_assets.examiner.exam import examine
from foundry_assets.examiner.items import Conversation, ExamItems, task_items
from foundry_assets.examiner.report import ExamReport
from foundry_assets.examiner.sides import ExamSource, check_sources
from foundry_assets.fsio import read_jsonl, write_json
from foundry_assets.hashing import sha256_tree, tree_digest
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher.fetch import fetch_artifact
from foundry_assets.stages import CuratedDataset, ExamResult, MergedModel
from foundry_assets.workspace import Workspace


def exam_items(curated: CuratedDataset, merged: MergedModel) -> ExamItems:
    """The curated test split (its rows carry the exam items) and every training split the candidate saw."""
    test_rows = read_jsonl(curated.test_path)
    logic, safety = task_items(test_rows)
    train_texts = [content_text(r) for r in read_jsonl(curated.train_path)]
    for path in merged.source_train_paths:  # a merge job's model saw its sources' data too
        train_texts += [content_text(r) for r in read_jsonl(path)]
    return ExamItems(train_texts, [Conversation.of_row(r) for r in test_rows], logic, safety)


def exam_sources(merged: MergedModel) -> list[ExamSource]:
    """The merge's source jobs (`merged.source_jobs`), each with its adapter's local copy, checked on disk (ExamError
    naming the job and folder): the exam scores each as its own side."""
    unnamed = [str(s.get("job_id")) for s in merged.source_jobs if not s.get("adapter_dir")]
    if unnamed:  # a merge record written before sources were kept for the exam
        raise ExamError(
            f"merge source jobs {unnamed} have no adapter_dir in the merge's record, so the exam cannot score them; "
            "materialize merged_model again"
        )
    sources = [ExamSource(str(s["job_id"]), Path(s["adapter_dir"])) for s in merged.source_jobs]
    check_sources(sources)
    return sources


def examine_job(
    manifest: TrainingManifest,
    curated: CuratedDataset,
    merged: MergedModel,
    workspace: Workspace,
    *,
    trail_for: Callable[[str], AuditTrail] | None = None,
    fetch: Fetcher = fetch_artifact,
) -> ExamResult:
    """Examine the job's merged model on `compute.device`, write the report to `workspace.exam_report_path`.

    With `exam.champion`, the champion is fetched first (`fetch`, from its registry; a `job` champion's `published`
    record read from `trail_for(job)`, by default the workspace's trail) and scored in the same exam; its copy leaves
    the node after the exam. A merge of source jobs scores each source's adapter (the copy the merge fetched) too.
    Raises FoundryError (or OSError) when the exam cannot run, ExamError naming a champion that cannot be fetched or
    verified or a source whose adapter folder is missing; a failed exam is a result, not an error.
    """
    # compute.device "cuda" on a node without one is a HardwareIncompatibleError, before any split is read
    device = resolve_device(manifest.compute.device)
    sources = exam_sources(merged)  # before the champion is fetched: a missing source stops the exam at once
    champion = resolve_champion(
        manifest,
        workspace,
        trail_for=trail_for or (lambda job_id: AuditTrail(workspace.audit_path(job_id))),
        fetch=fetch,
    )
    try:
        report, model_sha256 = _examined(manifest, curated, merged, device, champion, sources)
    finally:  # the champion's weights were only needed for the scoring
        shutil.rmtree(workspace.champion_dir(manifest.job_id), ignore_errors=True)
    path = workspace.exam_report_path(manifest.job_id)
    result = ExamResult(
        lot_number=merged.lot_number,
        job_id=manifest.job_id,
        report=report.to_dict(),
        markdown=report.to_markdown(),
        report_path=path,
        source_jobs=merged.source_jobs,
        model_sha256=model_sha256,
    )
    write_json(path, result.document(), indent=2, sort_keys=True)
    return result


def _examined(
    manifest: TrainingManifest,
    curated: CuratedDataset,
    merged: MergedModel,
    device: str,
    champion: Champion | None,
    sources: list[ExamSource],
) -> tuple[ExamReport, str]:
    """The exam's report and the tree digest of the model folder it judged."""
    # The verdict names the bytes it judged: the folder the exam loads is hashed beside the exam, on a thread (hashlib
    # releases the GIL), so at 8B the 15 GB hash overlaps the GPU work instead of adding ~15 s after it.
    with ThreadPoolExecutor(1, thread_name_prefix="exam-hash") as pool:
        hashed = pool.submit(sha256_tree, merged.model_dir)
        report = examine(
            Path(merged.base_model),
            merged.model_dir,
            exam_items(curated, merged),
            manifest.exam,
            max_length=manifest.method_config.max_seq_length,
            device=device,
            champion=champion,
            sources=sources,
        )
        return report, tree_digest(hashed.result())
