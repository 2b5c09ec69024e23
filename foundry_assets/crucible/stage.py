"""The Train stage's entry point: `train_job` trains one job's adapter by the foundry's rules, with no Dagster in it.

The rules, in order: a merge-only job (`merge.include_own_adapter: false`) trains nothing; the hardware pre-flight
refuses a node that cannot run the method before any model loads; the checkpoint plan decides once whether the run
resumes (`checkpoints.prepare`) and the training follows that decision; training runs in its own process
(`isolation.py`). Every decision, each logged loss and the saved adapter go to the audit trail through `on_event`,
the caller's audit writer, which returns the trail's new head; progress goes to `log` (the caller's logger).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from foundry_assets.audit_events import Event, OnEvent
from foundry_assets.crucible.checkpoints import CheckpointPlan, PreparedCheckpoints, prepare
from foundry_assets.crucible.hardware import HardwareReport, check_hardware, manifest_job_shape
from foundry_assets.crucible.isolation import train_adapter_isolated
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.result import TrainResult
from foundry_assets.crucible.telemetry import device_memory_held_gib
from foundry_assets.errors import HardwareIncompatibleError
from foundry_assets.fsio import read_jsonl
from foundry_assets.stages import CuratedDataset, TrainedAdapter

if TYPE_CHECKING:
    from foundry_assets.manifest import TrainingManifest
    from foundry_assets.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRun:
    """How the adapter was trained: the pre-flight's report, the run's result, and what the device still holds."""

    hardware: HardwareReport
    result: TrainResult
    memory_held_gib: float | None
    """Device memory this process still holds once the training process has ended (None where not measurable)."""


@dataclass(frozen=True)
class TrainJobResult:
    """`train_job`'s answer: the stage result, the audit head it left, and the run (None for a merge-only job)."""

    adapter: TrainedAdapter
    audit_head: str
    run: TrainingRun | None = None


def train_job(
    manifest: "TrainingManifest",
    curated: CuratedDataset,
    workspace: "Workspace",
    on_event: OnEvent,
    *,
    log: logging.Logger = logger,
) -> TrainJobResult:
    """Train the manifest's adapter on the curated training split into the job's adapter folder.

    Raises `HardwareIncompatibleError` (after recording `preflight_failed`) where the node cannot run the method,
    and the training's `FoundryError`s as they come from the training process.
    """
    model_path = str(manifest.model_path or manifest.base_model)
    if not manifest.merge.include_own_adapter:
        # A merge-only job: its merged model is made of the source jobs' adapters, so nothing is trained here.
        head = on_event(Event.TRAINING_SKIPPED, reason="merge.include_own_adapter is false")
        log.info("merge-only job: no adapter is trained; merged_model combines the source jobs' adapters")
        return TrainJobResult(TrainedAdapter(lot_number=curated.lot_number, model_path=model_path), head)
    hardware = _preflight(manifest, on_event, log)
    on_log = _loss_recorder(manifest.method_config.max_steps, on_event, log)
    checkpoints = _plan_start(manifest, curated, workspace, on_event, log)
    # in a child process: Unsloth's process-wide patches and the training's GPU memory end with it
    result = train_adapter_isolated(
        model_path=model_path,
        strategy_name=manifest.method_config.type,
        train_examples=read_jsonl(curated.train_path),
        out_dir=workspace.adapter_dir(manifest.job_id),
        params=TrainParams.from_manifest(manifest),
        hardware=hardware,
        on_log=on_log,
        checkpoints=checkpoints,
        base_model=manifest.base_model,
    )
    for warning in result.warnings:
        log.warning(warning)
    run = TrainingRun(hardware, result, device_memory_held_gib(result.device))
    return TrainJobResult(_adapter(curated, model_path, result), _record_saved(result, on_event), run)


def _preflight(manifest: "TrainingManifest", on_event: OnEvent, log: logging.Logger) -> HardwareReport:
    """The hardware pre-flight, recorded either way; a refusal is raised again for the caller."""
    method = manifest.method_config
    try:
        hardware = check_hardware(
            method.type,
            allow_gradient_checkpointing=method.allow_gradient_checkpointing,
            strict=method.strict_hardware_check,
            device=manifest.compute.device,
            job=manifest_job_shape(manifest),
        )
    except HardwareIncompatibleError as e:
        on_event(Event.PREFLIGHT_FAILED, reason=str(e))
        raise
    for warning in hardware.warnings:
        log.warning(warning)
    on_event(Event.PREFLIGHT_PASSED, **hardware.to_metadata())
    return hardware


def _plan_start(
    manifest: "TrainingManifest",
    curated: CuratedDataset,
    workspace: "Workspace",
    on_event: OnEvent,
    log: logging.Logger,
) -> PreparedCheckpoints | None:
    """Decide, once, whether training resumes from a checkpoint of this lot, and record the decision."""
    every = manifest.method_config.checkpoint_steps
    if not every:
        on_event(Event.TRAINING_STARTED, checkpoint_steps=0)
        return None
    plan = CheckpointPlan(workspace.checkpoints_dir(manifest.job_id), every, curated.lot_number)
    prepared = prepare(plan)
    if prepared.discarded:
        log.warning(prepared.discarded)
    if prepared.resume is not None:
        on_event(Event.TRAINING_RESUMED, from_step=prepared.resume.step, checkpoint=str(prepared.resume.path))
    else:
        on_event(Event.TRAINING_STARTED, checkpoint_steps=plan.every_steps, discarded=prepared.discarded)
    return prepared


def _loss_recorder(max_steps: int, on_event: OnEvent, log: logging.Logger) -> Callable[[int, float], None]:
    """`on_log(step, loss)` for the training: a progress line in the log and a `training_loss` audit record; the
    clock starts now, once the pre-flight has passed."""
    started = time.monotonic()

    def on_log(step: int, loss: float) -> None:
        elapsed = time.monotonic() - started
        log.info(f"step {step}/{max_steps}: loss {loss:.4f} ({elapsed:.0f} s, {step / elapsed:.2f} steps/s)")
        on_event(Event.TRAINING_LOSS, step=step, loss=loss)

    return on_log


def _record_saved(result: TrainResult, on_event: OnEvent) -> str:
    """The `adapter_saved` record: folder, file hashes and the run's summary (the loss curve has its own records)."""
    summary = result.to_metadata()
    return on_event(
        Event.ADAPTER_SAVED,
        adapter_dir=str(result.adapter_dir),
        files=result.files,
        **{k: v for k, v in summary.items() if k not in ("files", "adapter_dir", "losses")},
    )


def _adapter(curated: CuratedDataset, model_path: str, result: TrainResult) -> TrainedAdapter:
    return TrainedAdapter(
        lot_number=curated.lot_number,
        model_path=model_path,
        adapter_dir=Path(result.adapter_dir),
        files=result.files,
        backend=result.backend,
        device=result.device,
    )
