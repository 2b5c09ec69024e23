"""The alchemist's stage: one job's merge, from its manifest's `merge` section to a loadable model folder.

No Dagster here: the `merged_model` asset calls `merge_job`, and so can a CLI or a notebook. Every source is checked
(and a source job's adapter fetched from its registry) before any merge work; a refusal is a `MergeRefused` whose
`reason` is what the audit trail's `merge_refused` record says.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from foundry_assets.alchemist.refs import AdapterRef
from foundry_assets.alchemist.sources import ArtifactFetcher, JobSource, resolve_job_sources
from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Merged
from foundry_assets.devices import resolve_device
from foundry_assets.errors import FoundryError, MergeError
from foundry_assets.manifest import TrainingManifest
from foundry_assets.stages import MergedModel, TrainedAdapter
from foundry_assets.workspace import Workspace, missing_weights_reason

if TYPE_CHECKING:  # the merge needs torch, imported in `merge_job` only
    from foundry_assets.alchemist.merge import MergeResult


class MergeRefused(MergeError):
    """A merge refused before any merge work: a source that cannot be merged, or this job's adapter is gone.

    The message is the run's failure; `reason` is what the audit trail records.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MergeOutcome:
    """The merge stage's result (`model`, handed to the exam) and its provenance for the record and the UI."""

    model: MergedModel
    result: "MergeResult"
    jobs: list[JobSource]
    include_own_adapter: bool

    def merged_record(self) -> Merged:
        """The payload of the `merged` audit record."""
        return Merged(
            method=self.result.method,
            sources=self.result.sources,
            source_jobs=self.model.source_jobs,
            include_own_adapter=self.include_own_adapter,
            files=self.result.files,
        )

    def source_rows(self) -> list[list[Any]]:
        """One row per merged adapter: name, its job's lot (source jobs), adapter SHA256, weight, density."""
        lots = {source.job_id: source.lot_number for source in self.jobs}
        return [
            [
                s.get("name"),
                lots[s["name"]][:16] if s.get("name") in lots else "—",
                str(s.get("sha256", {}).get("adapter_model.safetensors", ""))[:16],
                s.get("weight"),
                s.get("density"),
            ]
            for s in self.result.sources
        ]


def merge_job(
    manifest: TrainingManifest,
    trained: TrainedAdapter,
    workspace: Workspace,
    *,
    trail_for: Callable[[str], AuditTrail],
    recorded_lots: dict[str, str | None],
    fetch: ArtifactFetcher,
) -> MergeOutcome:
    """Merge this job's adapter (unless `merge.include_own_adapter` is false) with the manifest's sources.

    `trail_for` opens a job's audit trail; `recorded_lots` maps each source job to the lot its latest `trained_adapter`
    materialization recorded; `fetch` brings a source job's published adapter from its registry
    (`resolve_job_sources`). Raises MergeRefused before any merge work, or MergeError (and HardwareIncompatibleError
    for `compute.device` "cuda" without a GPU) from the merge itself.
    """
    try:
        jobs = resolve_job_sources(
            manifest, workspace=workspace, trail_for=trail_for, recorded_lots=recorded_lots, fetch=fetch
        )
    except FoundryError as e:
        raise MergeRefused(f"merge sources: {e}", reason=str(e)) from e
    adapters = [*_own_adapter(manifest, trained, workspace, trail_for), *_source_refs(manifest, jobs)]
    # torch is loaded here, in the step, not when the code location loads
    from foundry_assets.alchemist.merge import merge_adapters

    result = merge_adapters(
        base_model=Path(trained.model_path),
        adapters=adapters,
        out_dir=workspace.merged_dir(manifest.job_id),
        normalize=manifest.merge.normalize,
        seed=manifest.merge.seed,
        device=resolve_device(manifest.compute.device),
        base_name=manifest.base_model,
    )
    model = MergedModel(
        lot_number=trained.lot_number,
        model_dir=result.out_dir,
        base_model=trained.model_path,
        method=result.method,
        device=result.device,
        dtype=result.dtype,
        files=result.files,
        adapter_dir=trained.adapter_dir,
        source_jobs=[source.to_metadata() for source in jobs],
        source_train_paths=[s.train_path for s in jobs if s.train_path],
    )
    return MergeOutcome(model, result, jobs, manifest.merge.include_own_adapter)


def _own_adapter(
    manifest: TrainingManifest,
    trained: TrainedAdapter,
    workspace: Workspace,
    trail_for: Callable[[str], AuditTrail],
) -> list[AdapterRef]:
    """This job's adapter as the first to merge, or none when `merge.include_own_adapter` is false."""
    merge = manifest.merge
    if not merge.include_own_adapter:
        return []
    own = trained.adapter_dir
    # The stored value may name a folder that left the node after the job's publish.
    if own is None or not own.is_dir():
        folder = own or workspace.adapter_dir(manifest.job_id)
        reason = f"this job's adapter: {missing_weights_reason(folder, trail_for(manifest.job_id).records())}"
        raise MergeRefused(reason, reason=reason)
    return [AdapterRef(own, merge.weight, merge.density, manifest.job_id)]


def _source_refs(manifest: TrainingManifest, jobs: list[JobSource]) -> list[AdapterRef]:
    """The manifest's sources in its order: checked source jobs, and adapter folders named directly."""
    by_job = {source.job_id: source for source in jobs}
    refs = []
    for s in manifest.merge.sources:
        if s.job:
            refs.append(by_job[s.job].ref())
        elif s.adapter:
            refs.append(AdapterRef(Path(s.adapter), s.weight, s.density, Path(s.adapter).name))
    return refs
