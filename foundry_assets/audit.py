"""The audit trail: an append-only JSONL log in which every record holds the SHA256 of the line before it.

Editing, removing or reordering any line breaks the chain at the next line; editing the last line breaks its own
`sha256`. Truncation of the tail is caught by comparing the head (the last record's hash) with the `audit_head`
that every asset writes into the Dagster event log (`foundry audit verify FILE --head HASH`). A torn last line (a
write cut off by a full disk or a kill) fails verification until the next append fences it (see `AuditTrail`).

Every record names its `actor` (who: `actor.py`) and, for a person's decision, the `reason` (why); both are inside
the hash, so changing who did something breaks the chain like changing what was done. Records written before actors
were recorded have neither and still verify.
"""

import errno
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from foundry_assets.actor import Actor, current_actor
from foundry_assets.audit_events import Event, TrailRepaired
from foundry_assets.errors import AuditError
from foundry_assets.fsio import _fsync_dir, write_bytes

GENESIS = "0" * 64


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return _line_hash(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8"))


def _new_record(
    seq: int,
    prev: str,
    job_id: str,
    event: str,
    data: dict[str, Any],
    actor: Actor,
    reason: str | None = None,
) -> tuple[dict[str, Any], bytes]:
    """A record linked to the line before it, and its line (ASCII JSON: a byte never splits a character); the actor
    and the reason are hashed with the rest."""
    record: dict[str, Any] = {
        "seq": seq,
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "job_id": job_id,
        "event": event,
        "actor": actor.to_dict(),
        **({"reason": reason} if reason is not None else {}),
        "data": data,
        "prev_sha256": prev,
    }
    record["sha256"] = _record_hash(record)
    return record, json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"


def _read_all(fd: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, payload: bytes) -> None:
    """One write on an O_APPEND descriptor (the whole payload lands at the end at once); a short write (the file
    reached its size limit) is continued, and its next write raises the OSError (EFBIG/ENOSPC)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head: str
    first_bad_line: int | None = None
    reason: str = ""


class AuditTrail:
    """Append-only, hash-chained JSONL log of one job's events.

    Crash-safe: each append writes its line(s) in one write at the end of the file and fsyncs it, under an exclusive
    lock held across processes. A write cut off part-way (a full disk, a kill) leaves a torn last line; the next append
    moves those bytes to a sidecar file beside the trail (`<trail>.torn-<seq>-<sha256[:12]>`, kept for good), cuts
    the trail back to its last whole line, and writes a `trail_repaired` record naming them before its own: a torn
    line is never joined to a record, and an auditor sees that it happened.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(
        self, event: str, *, job_id: str, actor: Actor | None = None, reason: str | None = None, **data: Any
    ) -> dict[str, Any]:
        """Append one record of `event` with `data`; returns it (with its `sha256`, the new head). `actor` defaults
        to the process's (`actor.current_actor`); `reason` is a person's why (e.g. a signature's), kept beside the
        actor. AuditError when the write fails (the disk is full): the record does not count, and the next append
        fences what was written of it."""
        return self.write(event, job_id=job_id, data=data, actor=actor, reason=reason)

    def write(
        self,
        event: str,
        *,
        job_id: str,
        data: dict[str, Any],
        actor: Actor | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """`append` with the payload as one dict, so a stage's own `reason` key (why a step was refused) stays in
        `data` and is not taken for a person's reason."""
        if reason is not None and not reason.strip():
            raise ValueError(f"{event}: an empty reason; say why, or give none")
        actor = actor or current_actor()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise self._error(e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
            if created:
                _fsync_dir(self.path.parent)
            content = _read_all(fd)
            whole = content[: content.rfind(b"\n") + 1]
            lines = whole.split(b"\n")[:-1]
            payload = b""
            prev = _line_hash(lines[-1]) if lines else GENESIS
            if len(whole) < len(content):
                fence = self._move_torn_tail(fd, content[len(whole) :], len(whole), len(lines) + 1)
                _fence, payload = _new_record(
                    len(lines) + 1, prev, job_id, Event.TRAIL_REPAIRED, dict(fence), actor
                )
                lines.append(payload[:-1])
                prev = _line_hash(payload[:-1])
            record, line = _new_record(len(lines) + 1, prev, job_id, event, data, actor, reason)
            _write_all(fd, payload + line)
            os.fsync(fd)
        except OSError as e:
            raise self._error(e) from e
        finally:
            os.close(fd)
        return record

    def _move_torn_tail(self, fd: int, torn: bytes, keep: int, seq: int) -> TrailRepaired:
        """Keep the torn bytes as evidence (written whole before the trail changes), then cut them off the trail."""
        digest = hashlib.sha256(torn).hexdigest()
        sidecar = self.path.with_name(f"{self.path.name}.torn-{seq}-{digest[:12]}")
        write_bytes(sidecar, torn)
        os.ftruncate(fd, keep)
        os.fsync(fd)
        return TrailRepaired(torn_bytes=len(torn), torn_sha256=digest, sidecar=sidecar.name)

    def _error(self, e: OSError) -> AuditError:
        code = errno.errorcode.get(e.errno or 0, str(e.errno))
        return AuditError(
            f"audit trail {self.path}: cannot append ({code}: {e.strerror}); the step's record is not written. "
            "Free space on that file system (or lift the file size limit) and run the step again; a partly written "
            "line is fenced by the next append."
        )

    def records(self) -> list[dict[str, Any]]:
        """Every record, after checking the chain (AuditError on the first bad line)."""
        result = verify_audit_log(self.path)
        if not result.ok:
            raise AuditError(f"{self.path}: line {result.first_bad_line}: {result.reason}")
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_bytes().split(b"\n")[:-1]]

    def head(self) -> str:
        """The `sha256` of the last record (GENESIS for an empty or missing log)."""
        return verify_audit_log(self.path).head


def verify_audit_log(path: str | Path, *, expected_head: str | None = None) -> VerifyResult:
    """Walk the chain; report the first line whose content or link to its predecessor does not hold."""
    path = Path(path)
    if not path.exists():
        return VerifyResult(False, 0, GENESIS, 0, f"audit log {str(path)!r} does not exist")
    prev, head, count = GENESIS, GENESIS, 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                return VerifyResult(False, count, head, number, _torn(len(raw)))
            line = raw[:-1]
            try:
                record = json.loads(line)
            except UnicodeDecodeError:
                return VerifyResult(False, count, head, number, "not valid UTF-8")
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


def _torn(size: int) -> str:
    return (
        f"torn last line: {size} bytes with no newline (a write was cut off, e.g. by a full disk); the next append "
        f"moves them to a sidecar file and fences them with a {Event.TRAIL_REPAIRED} record"
    )
