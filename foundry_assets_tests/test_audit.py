import hashlib
import json
import re
from multiprocessing import get_context
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.actor import ACTOR_ENV, Actor, use_actor
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


def test_every_record_names_its_actor_and_a_persons_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ACTOR_ENV, "service:ci")
    trail = AuditTrail(tmp_path / "j.jsonl")
    accepted = trail.append(Event.JOB_ACCEPTED, job_id="j", lot_number="abc")
    with use_actor(Actor("user", "alice")):
        loss = trail.append(Event.TRAINING_LOSS, job_id="j", step=10, loss=0.5)
    signer = Actor("user", "Dr. Quality Person", "run-7")
    signed = trail.append(Event.PUBLISHED, job_id="j", actor=signer, reason="release approved", tag="v1")
    refused = trail.write(Event.PUBLISH_REFUSED, job_id="j", data={"reason": "exam failed"})

    assert accepted["actor"] == {"kind": "service", "name": "ci"} and "reason" not in accepted
    assert loss["actor"] == {"kind": "user", "name": "alice"}
    assert signed["actor"] == {"kind": "user", "name": "Dr. Quality Person", "run_id": "run-7"}
    assert signed["reason"] == "release approved" and signed["data"] == {"tag": "v1"}
    assert (
        refused["data"] == {"reason": "exam failed"} and "reason" not in refused
    )  # a stage's why stays in data
    assert trail.records() == [accepted, loss, signed, refused]
    with pytest.raises(ValueError, match="an empty reason"):
        trail.append(Event.PUBLISHED, job_id="j", actor=signer, reason="  ")
    assert len(trail.records()) == 4


@pytest.mark.parametrize(
    "tamper",
    [
        lambda record: record["actor"].update(name="mallory"),
        lambda record: record["actor"].update(run_id="another-run"),
        lambda record: record.pop("reason"),
        lambda record: record.update(reason="approved without review"),
    ],
)
def test_changing_who_or_why_breaks_the_chain(tmp_path: Path, tamper: Any) -> None:
    from foundry_assets.audit import _record_hash

    trail = AuditTrail(tmp_path / "j.jsonl")
    trail.append(Event.JOB_ACCEPTED, job_id="j", actor=Actor("user", "alice", "r1"), lot_number="abc")
    trail.append(Event.PUBLISHED, job_id="j", actor=Actor("user", "qa", "r1"), reason="approved", tag="v1")
    trail.append(Event.NODE_WEIGHTS_REMOVED, job_id="j", actor=Actor("user", "qa", "r1"))
    lines = _lines(trail.path)
    record = json.loads(lines[1])
    tamper(record)
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    trail.path.write_text("".join(lines))
    result = verify_audit_log(trail.path)
    assert not result.ok and result.first_bad_line == 2 and "edited" in result.reason
    record["sha256"] = _record_hash(
        record
    )  # a forger who also re-hashes the record is caught by the next line
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    trail.path.write_text("".join(lines))
    result = verify_audit_log(trail.path)
    assert not result.ok and result.first_bad_line == 3 and "prev_sha256" in result.reason


def write_legacy_trail(path: Path, events: list[tuple[Event, dict[str, Any]]]) -> list[str]:
    """A trail as the foundry wrote it before records named their actor (seq, ts, job_id, event, data, hashes)."""
    prev, lines = GENESIS, []
    for seq, (event, data) in enumerate(events, start=1):
        record = {"seq": seq, "ts": "2026-11-01T00:00:00.000000+00:00", "job_id": "j", "event": event}
        record.update(data=data, prev_sha256=prev)
        body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        record["sha256"] = hashlib.sha256(body).hexdigest()
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        prev = hashlib.sha256(line.encode()).hexdigest()
        lines.append(line + "\n")
    path.write_text("".join(lines))
    return [str(json.loads(line)["sha256"]) for line in lines]


def test_records_written_before_actors_still_verify_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    heads = write_legacy_trail(path, [(Event.JOB_ACCEPTED, {"lot_number": "abc"}), (Event.DATA_CURATED, {})])
    assert verify_audit_log(path, expected_head=heads[-1]).ok
    AuditTrail(path).append(Event.PREFLIGHT_PASSED, job_id="j", actor=Actor("service", "dagster", "r2"))
    records = AuditTrail(path).records()
    assert ["actor" in r for r in records] == [False, False, True]
    assert records[2]["prev_sha256"] == hashlib.sha256(path.read_text().splitlines()[1].encode()).hexdigest()


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
