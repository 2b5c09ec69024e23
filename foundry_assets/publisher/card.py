"""The model card of a published tag (README.md at its root), made with huggingface_hub's `ModelCard`.

One card per tag, true to what the tag ships: an adapter (`PeftModel.from_pretrained(base, TAG)`), a merged model of
one job (its adapter folded into the base) or a DARE-TIES merge (a merge-only job trained nothing, and says so). The
metadata is what the hub indexes: license, base_model and its relation, library_name, pipeline_tag, tags, datasets,
and a `model-index` holding the exam's candidate values. The body is what a person checks before loading it: the lot
and its hashes, the recipe, the exam table (which metrics gated the release and which were only reported), the prompt
format shipped with the weights, a usage snippet and how to verify the download. Its bytes depend only on the job (no
timestamps, no node paths), so re-staging a job writes the same card and re-publishing its tag is a no-op.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_assets.audit_events import Event, Record
from foundry_assets.errors import ManifestError, PublishError
from foundry_assets.intake.lot import LotNumber
from foundry_assets.manifest import TrainingManifest, parse_manifest
from foundry_assets.publisher.base import EXAM_REPORT_FILE, HASH_MANIFEST, MANIFEST_FILE, MODEL_CARD
from foundry_assets.publisher.card_body import (
    exam_section,
    hub_base,
    merge_section,
    metric_rows,
    overview_section,
    prompt_format,
    prompt_section,
    recipe_section,
    usage_section,
    what_section,
)
from foundry_assets.publisher.gate import ReleaseRefused

if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

PIPELINE_TAG = "text-generation"
FOUNDRY_TAG = "coreason-model-foundry"


def lot_from_trail(records: list[Record], lot_number: str) -> LotNumber:
    """The lot's two hashes as intake recorded them (`job_accepted`), so the card names the data and manifest that
    made the model; a trail without that record is refused (the card would name a lot it cannot account for)."""
    for record in reversed(records):
        data = record.get("data") or {}
        if record.get("event") == Event.JOB_ACCEPTED and data.get("lot_number") == lot_number:
            return LotNumber(str(data["dataset_sha256"]), str(data["manifest_sha256"]), lot_number)
    raise ReleaseRefused(
        f"the audit trail holds no {Event.JOB_ACCEPTED} record of lot {lot_number[:12]}…, so the model card cannot "
        "name the data it was made from; run the job again from raw_data"
    )


def relation(manifest: TrainingManifest, kind: str) -> str:
    """The hub's base_model_relation: an adapter, one job's fine-tune folded in, or a DARE-TIES merge."""
    if kind == "adapter":
        return "adapter"
    return "merge" if manifest.merge.sources else "finetune"


def card_data(
    manifest: TrainingManifest, exam: Mapping[str, Any], *, kind: str, lot: LotNumber
) -> "ModelCardData":
    """The card's metadata: what the hub indexes and filters by, and the exam's candidate values as `model-index`."""
    from huggingface_hub import EvalResult, ModelCardData

    target, merge = manifest.publish_target, manifest.merge
    base = hub_base(manifest.base_model)
    tags = [FOUNDRY_TAG]
    tags += [manifest.method_config.type] if merge.include_own_adapter else []
    tags += ["dare-ties"] if merge.sources else []
    results = [
        EvalResult(
            task_type=PIPELINE_TAG,
            dataset_type=target.datasets[0] if target.datasets else "held-out",
            dataset_name=f"held-out split of lot {lot.lot_number[:12]}",
            dataset_split="test",
            dataset_revision=lot.dataset_sha256,
            metric_type=row.name,
            metric_name=row.name,
            metric_value=row.candidate,
        )
        for row in metric_rows(exam)
        if row.candidate is not None
    ]
    return ModelCardData(
        license=target.license,
        base_model=base,
        base_model_relation=relation(manifest, kind) if base else None,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        datasets=list(target.datasets) or None,
        model_name=f"{manifest.job_id}-{target.tag}",
        eval_results=results or None,
    )


def build_model_card(
    manifest: TrainingManifest,
    exam: Mapping[str, Any],
    *,
    kind: str,
    weights: Path,
    lot: LotNumber,
    trained: Mapping[str, Any] | None = None,
) -> "ModelCard":
    """The tag's card: `kind` is what it ships ("adapter" or "merged_model"), `weights` the folder of the shipped
    weights (its chat template and tokenizer config describe the prompt format), `exam` the exam report as the
    examiner wrote it, `lot` the lot's hashes, `trained` the job's `adapter_saved` record data (the training backend
    and device it names go into the recipe)."""
    from huggingface_hub import ModelCard

    data = card_data(manifest, exam, kind=kind, lot=lot)
    prompt = prompt_format(Path(weights))
    body = [
        f"# {manifest.job_id} — {manifest.publish_target.tag}",
        "",
        what_section(manifest, kind),
        "",
        *overview_section(manifest, kind, lot),
        *recipe_section(manifest, trained),
        *merge_section(manifest, exam),
        *exam_section(exam),
        *prompt_section(prompt),
        *usage_section(manifest, kind, prompt),
        "## Files and verification",
        "",
        f"`{MANIFEST_FILE}` is the training manifest and `{EXAM_REPORT_FILE}` the full exam report (per-item "
        f"answers). `{HASH_MANIFEST}` lists the SHA256 of every file; in the tag's folder, "
        f"`sha256sum -c {HASH_MANIFEST}` checks a download.",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_model_card(
    staging: Path,
    manifest_dict: Mapping[str, Any],
    exam_report_dict: Mapping[str, Any],
    *,
    kind: str,
    weights: Path,
    lot: LotNumber,
    trained: Mapping[str, Any] | None = None,
) -> Path:
    """Write the tag's model card (README.md) into `staging` and return its path; the manifest dict is validated
    first (a card is only made from a manifest the foundry accepts)."""
    try:
        manifest = parse_manifest(dict(manifest_dict), source="the published manifest")
    except ManifestError as e:
        raise PublishError(f"model card: {e}") from e
    card = build_model_card(manifest, exam_report_dict, kind=kind, weights=weights, lot=lot, trained=trained)
    path = Path(staging) / MODEL_CARD
    path.write_text(str(card), encoding="utf-8")
    return path
