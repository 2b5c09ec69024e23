import json
from pathlib import Path

import pytest

from foundry_assets.audit import GENESIS, AuditTrail, verify_audit_log
from foundry_assets.cli import main
from foundry_assets.errors import AuditError


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
