import hashlib
import json
import re
from multiprocessing import get_context
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from foundry_assets.audit import GENESIS, AuditTrail, verify_audit_log
from foundry_assets.audit_events import Event
from foundry_assets.cli import main
from foundry_assets.errors import AuditError
from foundry_assets_tests.faults import run_with_file_size_limit


@pytest.fixture
def log(tmp_path: Path) -> Path:
    trail = AuditTrail(tmp_path / "job.jsonl")
    trail.append("job_accepted", job_id="j", lot_number="abc")
    for step in (10, 20, 30):
        trail.append("training_loss", job_id="j", step=step, loss=1.0 / step)
    trail.append("published", job_id="j", uri="file:///r/v1")
    return trail.path


def test_intact_log_verifies_and_records_read_back(log: Path) -> None:
    result = verify_audit_log(log)
    assert result.ok and result.records == 5
    records = AuditTrail(log).records()
    assert [r["event"] for r in records] == ["job_accepted"] + ["training_loss"] * 3 + ["published"]
    assert records[0]["prev_sha256"] == GENESIS
    assert result.head == records[-1]["sha256"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_edited_line_is_caught_at_that_line(log: Path) -> None:
    lines = _lines(log)
    record = json.loads(lines[2])
    record["data"]["loss"] = 0.0001
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    log.write_text("".join(lines))
    result = verify_audit_log(log)
    assert not result.ok and result.first_bad_line == 3


def test_edit_with_recomputed_record_hash_is_caught_by_the_next_line(log: Path) -> None:
    from foundry_assets.audit import _record_hash

    lines = _lines(log)
    record = json.loads(lines[1])
    record["data"]["loss"] = 0.0001
    record["sha256"] = _record_hash(record)
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    log.write_text("".join(lines))
    result = verify_audit_log(log)
    assert not result.ok and result.first_bad_line == 3 and "prev_sha256" in result.reason


def test_removed_and_reordered_lines_are_caught(log: Path, tmp_path: Path) -> None:
    lines = _lines(log)
    removed = tmp_path / "removed.jsonl"
    removed.write_text("".join(lines[:2] + lines[3:]))
    assert verify_audit_log(removed).first_bad_line == 3
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert verify_audit_log(swapped).first_bad_line == 2


def test_truncated_tail_is_caught_against_the_recorded_head(log: Path) -> None:
    head = verify_audit_log(log).head
    log.write_text("".join(_lines(log)[:-1]))
    assert verify_audit_log(log).ok  # the chain alone cannot see a cut tail...
    assert not verify_audit_log(log, expected_head=head).ok  # ...the head kept in Dagster metadata can


def test_records_raise_on_a_broken_chain(log: Path) -> None:
    log.write_text("".join(_lines(log)[1:]))
    with pytest.raises(AuditError, match="line 1"):
        AuditTrail(log).records()


def test_cli_verify_exit_codes(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(log)]) == 0
    assert "5 records" in capsys.readouterr().out
    lines = _lines(log)
    log.write_text("".join([*lines[:3], lines[3].replace('"step":30', '"step":31'), *lines[4:]]))
    assert main(["audit", "verify", str(log)]) == 1
    assert "line 4" in capsys.readouterr().err


PUBLISHED = {"uri": "file:///r/v1", "files": {f"adapter/part-{i}.safetensors": "a" * 64 for i in range(8)}}


def _append_published(path: Path) -> None:
    """Run in a child under a file-size limit (see `faults.py`): the `published` record is cut off part-way."""
    AuditTrail(path).append(Event.PUBLISHED, job_id="j", **PUBLISHED)


def test_a_torn_tail_fails_verify_naming_the_torn_bytes(log: Path) -> None:
    with log.open("ab") as handle:
        handle.write(b'{"data":{"uri":"file:///r')
    result = verify_audit_log(log)
    assert not result.ok and result.first_bad_line == 6 and result.records == 5
    assert "torn" in result.reason and "25 bytes" in result.reason and Event.TRAIL_REPAIRED in result.reason


@pytest.mark.faults
def test_a_full_disk_fails_the_append_and_the_next_append_fences_the_torn_line(log: Path) -> None:
    before = log.read_bytes()
    originals = AuditTrail(log).records()
    with pytest.raises(AuditError, match=rf"{re.escape(str(log))}.*EFBIG"):
        run_with_file_size_limit(len(before) + 100, _append_published, log)
    torn = log.read_bytes()[len(before) :]
    assert log.read_bytes().startswith(before) and len(torn) == 100 and not torn.endswith(b"\n")
    assert not verify_audit_log(log).ok

    _append_published(log)  # space is back: the torn line is moved aside and fenced, never joined

    result = verify_audit_log(log)
    assert result.ok and result.records == 7
    records = AuditTrail(log).records()
    assert records[:5] == originals
    fence, published = records[5:]
    sidecar = log.parent / fence["data"]["sidecar"]
    assert fence["event"] == Event.TRAIL_REPAIRED and fence["job_id"] == "j"
    assert fence["data"] == {
        "torn_bytes": 100,
        "torn_sha256": hashlib.sha256(torn).hexdigest(),
        "sidecar": f"{log.name}.torn-6-{hashlib.sha256(torn).hexdigest()[:12]}",
    }
    assert sidecar.read_bytes() == torn
    assert published["event"] == Event.PUBLISHED and published["data"] == PUBLISHED and published["seq"] == 7


@pytest.mark.faults
def test_a_full_disk_before_the_first_byte_leaves_the_trail_whole(log: Path) -> None:
    before = log.read_bytes()
    with pytest.raises(AuditError, match="EFBIG"):
        run_with_file_size_limit(len(before), _append_published, log)
    assert log.read_bytes() == before and verify_audit_log(log).ok


def _append_many(path: Path, worker: int, start: Barrier) -> None:
    start.wait()
    for i in range(50):
        AuditTrail(path).append(Event.TRAINING_LOSS, job_id="j", step=worker * 1000 + i, loss=0.5)


@pytest.mark.faults
def test_appends_from_several_processes_at_once_keep_one_chain_with_every_record(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    context = get_context("spawn")
    start = context.Barrier(4)
    workers = [context.Process(target=_append_many, args=(path, w, start)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [w.exitcode for w in workers] == [0] * 4
    result = verify_audit_log(path)
    assert result.ok and result.records == 200
    steps = sorted(r["data"]["step"] for r in AuditTrail(path).records())
    assert steps == [w * 1000 + i for w in range(4) for i in range(50)]
