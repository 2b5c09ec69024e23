"""The audit trail: an append-only JSONL log in which every record holds the SHA256 of the line before it.

Editing, removing or reordering any line breaks the chain at the next line; editing the last line breaks its own
`sha256`. Truncation of the tail is caught by comparing the head (the last record's hash) with the `audit_head`
that every asset writes into the Dagster event log (`foundry audit verify FILE --head HASH`).
"""

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from foundry_assets.errors import AuditError

GENESIS = "0" * 64


def _line_hash(line: str) -> str:
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


def _record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return _line_hash(json.dumps(body, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head: str
    first_bad_line: int | None = None
    reason: str = ""


class AuditTrail:
    """Append-only, hash-chained JSONL log of one job's events."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, event: str, *, job_id: str, **data: Any) -> dict[str, Any]:
        """Append one record under an exclusive lock; returns it (with its `sha256`, the new head)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                lines = handle.read().splitlines()
                prev = _line_hash(lines[-1]) if lines else GENESIS
                record: dict[str, Any] = {
                    "seq": len(lines) + 1,
                    "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                    "job_id": job_id,
                    "event": event,
                    "data": data,
                    "prev_sha256": prev,
                }
                record["sha256"] = _record_hash(record)
                handle.seek(0, os.SEEK_END)
                handle.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every record, after checking the chain (AuditError on the first bad line)."""
        result = verify_audit_log(self.path)
        if not result.ok:
            raise AuditError(f"{self.path}: line {result.first_bad_line}: {result.reason}")
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines()]

    def head(self) -> str:
        """The `sha256` of the last record (GENESIS for an empty or missing log)."""
        return verify_audit_log(self.path).head


def verify_audit_log(path: str | Path, *, expected_head: str | None = None) -> VerifyResult:
    """Walk the chain; report the first line whose content or link to its predecessor does not hold."""
    path = Path(path)
    if not path.exists():
        return VerifyResult(False, 0, GENESIS, 0, f"audit log {str(path)!r} does not exist")
    prev, head, count = GENESIS, GENESIS, 0
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith("\n"):
                return VerifyResult(
                    False, count, head, number, "incomplete last line (an interrupted write?)"
                )
            line = raw[:-1]
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                return VerifyResult(False, count, head, number, f"not valid JSON ({e.msg})")
            if not isinstance(record, dict):
                return VerifyResult(False, count, head, number, "not a JSON object")
            if record.get("prev_sha256") != prev:
                return VerifyResult(
                    False,
                    count,
                    head,
                    number,
                    "prev_sha256 does not match the line before: a line was edited, removed or reordered",
                )
            if record.get("seq") != number:
                return VerifyResult(
                    False, count, head, number, f"seq {record.get('seq')!r} where {number} belongs"
                )
            if record.get("sha256") != _record_hash(record):
                return VerifyResult(
                    False, count, head, number, "record content does not match its sha256 (edited)"
                )
            prev, head, count = _line_hash(line), record["sha256"], count + 1
    if expected_head is not None and head != expected_head:
        return VerifyResult(
            False,
            count,
            head,
            count,
            f"head {head[:12]}… is not the expected {expected_head[:12]}… (truncated?)",
        )
    return VerifyResult(True, count, head)
