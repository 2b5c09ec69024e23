"""The drop ledger (the sensor's cursor): readable across ticks, one job_id per content."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from foundry_assets.errors import DataError, ManifestError
from foundry_assets.intake.drops import DropFolder, DropRef, LocalDrops
from foundry_assets.intake.ledger import DropLedger, DropRejection
from foundry_assets.intake.plan import DropPlan, inspect_drop, inspect_listed
from foundry_assets.manifest import MAX_QUOTED_CHARS
from foundry_assets.workspace import Workspace
from foundry_assets_tests.intake.conftest import write_drop


def test_an_unreadable_cursor_starts_over_instead_of_failing_every_tick() -> None:
    assert DropLedger.loads("not json").drops == {}
    assert DropLedger.loads('{"version": 0, "drops": {"a": {}}}').drops == {}
    ledger = DropLedger.loads('{"version": 1, "drops": {"a": {"fingerprint": "f", "status": "requested"}}}')
    assert DropLedger.loads(ledger.dumps()).drops == ledger.drops


def test_a_job_id_requested_with_other_content_is_refused_and_not_marked(
    tmp_path: Path, workspace: Workspace
) -> None:
    write_drop(tmp_path / "inbox" / "first", "same-job")
    write_drop(tmp_path / "inbox" / "second", "same-job", base_model="other-base")
    source = LocalDrops(tmp_path / "inbox")
    first, second = source.list_drops()
    ledger = DropLedger()
    ledger.request(first, inspect_listed(source, first, workspace))
    assert ledger.drops["first"]["job_id"] == "same-job"
    ledger.request(first, inspect_listed(source, first, workspace))  # the same content again is no conflict
    with pytest.raises(ManifestError, match="already requested by drop 'first' with different content"):
        ledger.request(second, inspect_listed(source, second, workspace))
    assert "second" not in ledger.drops
    assert not ledger.is_handled(second)


class _Unreachable(LocalDrops):
    """Drops listed, but one cannot be fetched: `open` fails with `error` for the drop named `name`."""

    def __init__(self, folder: Path, name: str, error: Exception) -> None:
        super().__init__(folder)
        self.name, self.error = name, error

    @contextmanager
    def open(self, ref: DropRef) -> Iterator[DropFolder]:
        if ref.name == self.name:
            raise self.error
        with super().open(ref) as drop:
            yield drop


def test_any_failure_of_one_drop_rejects_it_alone_by_type_never_quoting_its_message(
    tmp_path: Path, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a FoundryError used to mark a drop invalid; anything else (RecursionError, UnicodeDecodeError) raised
    out of the sensor's tick, for every tick. Its message may quote the drop, so the reason names type and place."""
    for name in ("a-good", "b-recursion"):
        write_drop(tmp_path / "inbox" / name, name)
    source = LocalDrops(tmp_path / "inbox")

    def recursing(drop: DropFolder, ws: Workspace) -> DropPlan:
        if drop.name == "b-recursion":
            raise RecursionError("maximum recursion depth exceeded in [[[[[ the drop's content")
        return inspect_drop(drop, ws)

    monkeypatch.setattr("foundry_assets.intake.ledger.inspect_drop", recursing)
    ledger = DropLedger()
    good, bad = source.list_drops()
    assert isinstance(ledger.evaluate(source, good, workspace), DropPlan)
    rejection = ledger.evaluate(source, bad, workspace)
    assert isinstance(rejection, DropRejection) and not rejection.retry
    assert rejection.reason.startswith(
        "the foundry could not inspect this drop: RecursionError at test_ledger.py:"
    )
    assert "[[[" not in rejection.reason
    assert ledger.rejected() == {"b-recursion": rejection.reason}
    assert ledger.drops["a-good"]["status"] == "requested"


def test_a_drop_that_cannot_be_fetched_is_tried_again_one_that_leaves_its_folder_is_invalid(
    tmp_path: Path, workspace: Workspace
) -> None:
    """S3 unreachable is no fault of the drop: not recorded, the next tick tries again (before, it failed the whole
    tick). An S3 key leaving its folder is the drop's fault (a DataError): recorded as invalid."""
    write_drop(tmp_path / "inbox" / "remote", "remote")
    [ref] = LocalDrops(tmp_path / "inbox").list_drops()
    ledger = DropLedger()
    offline = _Unreachable(tmp_path / "inbox", "remote", ConnectionError("endpoint unreachable"))
    rejection = ledger.evaluate(offline, ref, workspace)
    assert isinstance(rejection, DropRejection) and rejection.retry
    assert "ConnectionError" in rejection.reason and not ledger.is_handled(ref)
    escaping = _Unreachable(
        tmp_path / "inbox", "remote", DataError("object key '../x' leaves the drop folder")
    )
    rejection = ledger.evaluate(escaping, ref, workspace)
    assert isinstance(rejection, DropRejection) and not rejection.retry
    assert ledger.rejected() == {"remote": "object key '../x' leaves the drop folder"}


def test_a_cursor_written_with_an_unbounded_reason_is_read_back_bounded() -> None:
    """Cursors stored before reasons were bounded hold megabytes (an alias bomb's reason was 35 MB); the drop keeps
    its fingerprint, so the reason would never be rewritten: reading the cursor bounds it."""
    cursor = json.dumps(
        {
            "version": 1,
            "drops": {"bomb": {"fingerprint": "f", "status": "invalid", "reason": "x" * 1_000_000}},
        }
    )
    ledger = DropLedger.loads(cursor)
    assert ledger.drops["bomb"]["reason"].endswith(f"… ({1_000_000 - MAX_QUOTED_CHARS} more characters)")
    assert len(ledger.dumps()) < 500
