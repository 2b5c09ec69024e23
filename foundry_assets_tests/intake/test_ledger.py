"""The drop ledger (the sensor's cursor): readable across ticks, one job_id per content."""

from pathlib import Path

import pytest

from foundry_assets.errors import ManifestError
from foundry_assets.intake.drops import LocalDrops
from foundry_assets.intake.ledger import DropLedger
from foundry_assets.intake.plan import inspect_listed
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
