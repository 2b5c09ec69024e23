"""The drop ledger: what the sensor has done with each drop, by fingerprint; serialised as the sensor's cursor."""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from foundry_assets.errors import ManifestError
from foundry_assets.intake.drops import DropRef
from foundry_assets.intake.plan import DropPlan

DropStatus = Literal["requested", "invalid"]


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
            return cls(dict(document["drops"])) if document.get("version") == cls.VERSION else cls()
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

    def rejected(self) -> dict[str, str]:
        """Each invalid drop and why, as last evaluated."""
        return {
            name: str(e.get("reason", "")) for name, e in self.drops.items() if e.get("status") == "invalid"
        }

    def forget_missing(self, present: set[str]) -> None:
        """Drop entries of drops that are gone, so the cursor stays the size of the drop location."""
        self.drops = {name: entry for name, entry in self.drops.items() if name in present}
