"""The drop ledger: what the sensor has done with each drop, by fingerprint; serialised as the sensor's cursor."""

import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.errors import FoundryError, ManifestError
from foundry_assets.intake.drops import DropRef, DropSource
from foundry_assets.intake.plan import DropPlan, inspect_drop
from foundry_assets.manifest import bounded
from foundry_assets.workspace import Workspace

DropStatus = Literal["requested", "invalid"]


@dataclass(frozen=True)
class DropRejection:
    """Why a listed drop is not requested (at most a few hundred characters), and whether the next tick tries it
    again: `retry` when it could not be fetched (S3 unreachable), not when its content is wrong."""

    reason: str
    retry: bool


def failure_reason(error: Exception) -> str:
    """Why a drop failed, bounded: a FoundryError's own message (written for the user, its quotes bounded), else the
    exception's type and where it was raised, never its message, which may quote the drop's content. An unexpected
    error stays visible as what it is (a RecursionError in plan.py) without carrying the input along."""
    if isinstance(error, FoundryError):
        return bounded(str(error))
    frames = list(traceback.walk_tb(error.__traceback__))
    where = ""
    if frames:
        frame, line = frames[-1]
        where = f" at {Path(frame.f_code.co_filename).name}:{line} ({frame.f_code.co_name})"
    detail = f" ({error.strerror})" if isinstance(error, OSError) and error.strerror else ""
    return bounded(
        f"the foundry could not inspect this drop: {type(error).__name__}{where}{detail}; a drop beyond the "
        "foundry's limits or a foundry bug: please report it"
    )


@dataclass
class DropLedger:
    """Each drop by name: the fingerprint last evaluated, and whether it was requested as a job or found invalid."""

    drops: dict[str, dict[str, Any]] = field(default_factory=dict)

    VERSION = 1

    @classmethod
    def loads(cls, cursor: str | None) -> "DropLedger":
        """The ledger in a cursor; an empty one for no cursor or one this version cannot read (every drop is then
        evaluated again, and run keys keep a valid drop from running twice)."""
        try:
            document = json.loads(cursor or "{}")
            if document.get("version") != cls.VERSION:
                return cls()
            return cls(  # reasons bounded again: a cursor written before they were could hold megabytes
                {
                    name: {**entry, "reason": bounded(str(entry["reason"]))}
                    if "reason" in entry
                    else dict(entry)
                    for name, entry in dict(document["drops"]).items()
                }
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def dumps(self) -> str:
        return json.dumps(
            {"version": self.VERSION, "drops": self.drops}, sort_keys=True, separators=(",", ":")
        )

    def is_handled(self, ref: DropRef) -> bool:
        """True when this exact content of the drop was already evaluated (valid or not)."""
        return self.drops.get(ref.name, {}).get("fingerprint") == ref.fingerprint

    def mark(self, ref: DropRef, status: DropStatus, **details: Any) -> None:
        self.drops[ref.name] = {"fingerprint": ref.fingerprint, "status": status, **details}

    def request(self, ref: DropRef, plan: DropPlan) -> None:
        """Mark a valid drop requested as its job; a ManifestError (nothing marked) when another drop already
        requested that job_id with other content (another run key): a job_id names one job."""
        for name, entry in self.drops.items():
            if (
                entry.get("status") == "requested"
                and entry.get("job_id") == plan.job_id
                and entry.get("run_key") != plan.run_key
            ):
                raise ManifestError(
                    f"job_id {plan.job_id!r} is already requested by drop {name!r} with different content; "
                    "a job_id names one job: give this drop its own job_id"
                )
        self.mark(ref, "requested", job_id=plan.job_id, run_key=plan.run_key)

    def evaluate(self, source: DropSource, ref: DropRef, workspace: Workspace) -> DropPlan | DropRejection:
        """Open and inspect a listed drop and record the outcome: requested, or invalid with a bounded reason. Any
        exception of one drop (not only a FoundryError: a RecursionError, a MemoryError, a decoding error) rejects
        that drop alone, so no drop can stop the sensor for the others. Only a failure to fetch the drop that is not
        the drop's own fault (S3 unreachable) is left unrecorded, for the next tick to try again."""
        try:
            with source.open(ref) as drop:
                try:
                    plan = inspect_drop(drop, workspace)
                    self.request(ref, plan)
                    return plan
                except Exception as e:
                    reason = failure_reason(e)
                    self.mark(ref, "invalid", reason=reason)
                    return DropRejection(reason, retry=False)
        except Exception as e:
            if isinstance(e, FoundryError):  # the drop is wrong as listed: an S3 key that leaves its folder
                self.mark(ref, "invalid", reason=failure_reason(e))
            return DropRejection(failure_reason(e), retry=not isinstance(e, FoundryError))

    def rejected(self) -> dict[str, str]:
        """Each invalid drop and why, as last evaluated."""
        return {
            name: str(e.get("reason", "")) for name, e in self.drops.items() if e.get("status") == "invalid"
        }

    def forget_missing(self, present: set[str]) -> None:
        """Drop entries of drops that are gone, so the cursor stays the size of the drop location."""
        self.drops = {name: entry for name, entry in self.drops.items() if name in present}
