"""Who sits the exam: the base model (baseline), the champion when `exam.champion` names one, each merge source job's
adapter on the base model (a merge job's specialists, the skills the merged model must keep), and the candidate.

Each side is one model scored on the same rendered items, one at a time on the device; its answers are keyed
`<side>_answer` (and `<side>_correct`, …) in the report's per-item rows.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NewType

from foundry_assets.errors import ExamError

SourceSide = NewType("SourceSide", str)
"""A merge source's side: "source:<job_id>" (`source_side`)."""
Side = Literal["baseline", "champion", "candidate"] | SourceSide
SOURCE_PREFIX = "source:"


def source_side(job_id: str) -> SourceSide:
    """The side name of merge source job `job_id`, as its per-item keys use it ("source:<job_id>_answer")."""
    return SourceSide(f"{SOURCE_PREFIX}{job_id}")


@dataclass(frozen=True)
class ExamSource:
    """A merge source job's adapter, scored on the base model as its own side: the specialist whose skill the merged
    model must keep (`exam.source_retention`). `adapter_dir` is the merge job's local copy, fetched from the source's
    registry for the merge (`MergedModel.source_jobs`)."""

    job_id: str
    adapter_dir: Path

    @property
    def side(self) -> SourceSide:
        return source_side(self.job_id)

    def to_metadata(self) -> dict[str, str]:
        """The source as the exam report names it."""
        return {"job_id": self.job_id, "adapter_dir": str(self.adapter_dir)}


def check_sources(sources: Sequence[ExamSource]) -> None:
    """Every source named once and its adapter on disk, before any model loads; ExamError names the job and folder."""
    problems = []
    seen: set[str] = set()
    for source in sources:
        if source.job_id in seen:
            problems.append(f"merge source job {source.job_id!r} is listed twice; list each source job once")
        seen.add(source.job_id)
        if not (Path(source.adapter_dir) / "adapter_config.json").is_file():
            what = "holds no adapter_config.json" if Path(source.adapter_dir).is_dir() else "is missing"
            problems.append(
                f"merge source job {source.job_id!r}: its adapter folder {source.adapter_dir} {what}, so the exam "
                "cannot score the skill the merged model must keep; materialize merged_model again (it fetches "
                "the source's adapter from its registry)"
            )
    if problems:
        raise ExamError("; ".join(problems))
