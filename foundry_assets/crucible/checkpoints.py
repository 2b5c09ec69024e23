"""Resumable training: where a job's trainer checkpoints live, and whether a killed run may resume from them.

A job's checkpoint folder holds the trainer's `checkpoint-N/` folders (adapter, optimizer, scheduler and RNG state,
written by the HF Trainer every `checkpoint_steps`) and `lot.json`, the lot number they were trained under. A run
resumes only from checkpoints of its own lot number: another lot means other data or another manifest, and its
checkpoints are discarded, never resumed. `prepare` is the one place that decides where a run starts: the caller
announces the decision (audit trail) and hands the same `PreparedCheckpoints` to the training, which follows it.
"""

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from foundry_assets.fsio import write_json

logger = logging.getLogger(__name__)

LOT_FILE = "lot.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class CheckpointPlan:
    """Save every `every_steps` optimizer steps into `folder`, tagged with `lot_number`."""

    folder: Path
    every_steps: int
    lot_number: str


@dataclass(frozen=True)
class ResumePoint:
    """A whole checkpoint of this lot: the trainer resumes from `path` at optimizer step `step`."""

    path: Path
    step: int


@dataclass(frozen=True)
class PreparedCheckpoints:
    """A plan whose folder now holds only this lot's checkpoints, and the decision: resume from `resume` or step 0."""

    plan: CheckpointPlan
    resume: ResumePoint | None
    discarded: str | None = None
    """The warning where another lot's checkpoints were removed (training then starts from step 0)."""


def stored_lot(folder: Path) -> str | None:
    """The lot number the folder's checkpoints belong to, or None where none is recorded."""
    try:
        return str(json.loads((folder / LOT_FILE).read_text(encoding="utf-8"))["lot_number"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_resume_point(plan: CheckpointPlan) -> ResumePoint | None:
    """The newest complete checkpoint of `plan.lot_number` in `plan.folder`, or None (start from step 0).

    Complete means the trainer got as far as `trainer_state.json`, its last write; a checkpoint cut off by a
    kill is skipped in favour of the one before it.
    """
    if stored_lot(plan.folder) != plan.lot_number:
        return None
    found = []
    for path in plan.folder.glob("checkpoint-*"):
        match = _CHECKPOINT_RE.match(path.name)
        if (
            match
            and (path / "trainer_state.json").is_file()
            and (path / "adapter_model.safetensors").is_file()
        ):
            found.append(ResumePoint(path=path, step=int(match.group(1))))
    return max(found, key=lambda point: point.step, default=None)


def prepare(plan: CheckpointPlan) -> PreparedCheckpoints:
    """Make `plan.folder` ready for this lot and decide where to resume, with a warning if checkpoints were dropped.

    Checkpoints of another lot (or of none) are removed before training writes new ones, so they can never be
    mixed with, or mistaken for, this lot's.
    """
    plan.folder.mkdir(parents=True, exist_ok=True)
    previous = stored_lot(plan.folder)
    warning = None
    if previous != plan.lot_number:
        stale = [p for p in plan.folder.iterdir() if p.name != LOT_FILE]
        if stale:
            warning = (
                f"Discarded {len(stale)} checkpoint item(s) in {plan.folder} from lot {previous or 'unknown'}: "
                f"they do not belong to lot {plan.lot_number}, so training starts from step 0."
            )
            logger.warning(warning)
        for path in stale:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        write_json(plan.folder / LOT_FILE, {"lot_number": plan.lot_number})
    return PreparedCheckpoints(plan, find_resume_point(plan), warning)


def clear(plan: CheckpointPlan) -> None:
    """Remove the job's checkpoints once its adapter is published (they hold pickled optimizer state)."""
    shutil.rmtree(plan.folder, ignore_errors=True)
