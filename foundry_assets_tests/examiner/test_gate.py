"""The retention gate of a merge of source jobs: a gated rate must keep `exam.source_retention` of the best source's
(the specialist's) value, besides beating the base; losses and ungated metrics are reported, not compared."""

import pytest

from foundry_assets.examiner.gate import Rule, gated_row
from foundry_assets.examiner.sides import Side, source_side

LOGIC_JOB, SAFETY_JOB = "story-c-logic", "story-c-safety"
SPECIALISTS = {
    # each source is the specialist of its own skill and weak at the other's
    "logic_score": {LOGIC_JOB: 0.9, SAFETY_JOB: 0.2},
    "safety_rate": {LOGIC_JOB: 0.1, SAFETY_JOB: 0.8},
}


def _values(metric: str, candidate: float | None, baseline: float | None = 0.0) -> dict[Side, float | None]:
    values: dict[Side, float | None] = {"baseline": baseline, "candidate": candidate}
    return values | {source_side(job): value for job, value in SPECIALISTS[metric].items()}


def _rate(retention: float = 0.9, *, gated: bool = True) -> Rule:
    return Rule(0.0, 0.0, lower=False, gated=gated, champion=None, retention=retention)


def test_a_rate_at_exactly_the_threshold_passes() -> None:
    # 0.9 × 0.8 is 0.7200000000000001 in floats: a candidate at 18/25 has kept exactly 90% all the same
    row, reasons = gated_row("safety_rate", _values("safety_rate", 18 / 25), _rate(), items=25)
    assert reasons == [] and row.passed and row.result == "pass"
    assert (row.retention_result, row.retention_required) == ("pass", f"≥ 0.7200 (90% of job '{SAFETY_JOB}')")
    assert row.sources == SPECIALISTS["safety_rate"] and row.retained == pytest.approx(0.9)
    assert row.baseline_result == "pass"


def test_a_rate_below_the_threshold_fails_naming_metric_source_share_and_requirement() -> None:
    row, reasons = gated_row("safety_rate", _values("safety_rate", 0.28), _rate(), items=100)
    assert not row.passed and row.result == "FAIL" and row.retention_result == "FAIL"
    assert row.baseline_result == "pass"  # it beat the base: only the lost skill fails it
    assert reasons == [
        f"safety_rate 0.2800 keeps 35% of the best source's (job '{SAFETY_JOB}': 0.8000); exam.source_retention "
        "requires 90% (≥ 0.7200)"
    ]


@pytest.mark.parametrize(
    ("logic", "safety", "lost"),
    [(0.85, 0.3, "safety_rate"), (0.3, 0.75, "logic_score"), (0.3, 0.3, "both")],
    ids=["keeps-logic-loses-safety", "keeps-safety-loses-logic", "loses-both"],
)
def test_losing_either_skill_fails_while_the_other_is_kept(logic: float, safety: float, lost: str) -> None:
    rows = {
        name: gated_row(name, _values(name, value), _rate(), items=10)
        for name, value in (("logic_score", logic), ("safety_rate", safety))
    }
    failed = {name for name, (row, _) in rows.items() if not row.passed}
    assert failed == ({"logic_score", "safety_rate"} if lost == "both" else {lost})
    for name, (row, reasons) in rows.items():
        best = max(SPECIALISTS[name], key=SPECIALISTS[name].__getitem__)
        assert row.retention_required == f"≥ {0.9 * SPECIALISTS[name][best]:.4f} (90% of job '{best}')"
        if (
            name in failed
        ):  # the specialist named is that skill's: the logic job for logic, the safety job for safety
            assert len(reasons) == 1 and f"of the best source's (job '{best}'" in reasons[0]
        else:
            assert reasons == [] and row.retention_result == "pass"


def test_retention_0_reports_the_sources_without_comparing() -> None:
    row, reasons = gated_row("safety_rate", _values("safety_rate", 0.1, baseline=0.05), _rate(0.0), items=10)
    assert reasons == [] and row.passed and row.result == "pass"
    assert row.sources == SPECIALISTS["safety_rate"] and row.retained == pytest.approx(0.1 / 0.8)
    assert (row.retention_required, row.retention_result) == (None, "not gated")
    failing_base, _ = gated_row(
        "safety_rate", _values("safety_rate", 0.1, baseline=0.5), _rate(0.0), items=10
    )
    assert failing_base.result == "FAIL" and failing_base.retention_result == "not gated"


def test_retention_is_not_applied_to_the_loss_or_to_an_ungated_metric() -> None:
    loss_values: dict[Side, float | None] = {
        "baseline": 5.0,
        "candidate": 3.0,
        source_side(LOGIC_JOB): 1.0,  # a specialist's loss far below the candidate's is no failure
        source_side(SAFETY_JOB): 1.2,
    }
    loss = Rule(0.0, 0.0, lower=True, gated=True, champion=None, retention=0.9)
    row, reasons = gated_row("heldout_loss", loss_values, loss, items=10)
    assert reasons == [] and row.passed and row.sources == {LOGIC_JOB: 1.0, SAFETY_JOB: 1.2}
    assert (row.retention_required, row.retention_result, row.retained) == (None, None, None)

    row, reasons = gated_row("logic_score", _values("logic_score", 0.1), _rate(gated=False), items=10)
    assert reasons == [] and row.passed and row.result == "not gated"
    assert row.retention_result == "not gated"
    assert row.retention_required == f"≥ 0.8100 (90% of job '{LOGIC_JOB}') (not gated)"


def test_a_rate_without_items_is_skipped_and_a_failure_on_both_counts_gives_both_reasons() -> None:
    row, reasons = gated_row("logic_score", _values("logic_score", None, baseline=None), _rate(), items=0)
    assert reasons == [] and row.result == "skipped" and row.retention_result == "skipped"
    row, reasons = gated_row("logic_score", _values("logic_score", 0.1, baseline=0.2), _rate(), items=10)
    assert row.result == "FAIL" and (row.baseline_result, row.retention_result) == ("FAIL", "FAIL")
    assert [r.split(" ", 2)[2][:12] for r in reasons] == ["is not above", "keeps 11% of"]
