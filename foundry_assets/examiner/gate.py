"""The gate of one metric: the candidate against the base model (strictly better, by `exam.min_*_improvement`) and,
when the exam names one, against the champion (at least as good, better by `exam.champion_margin`)."""

import math
from dataclasses import dataclass
from typing import Literal

from foundry_assets.examiner.report import MetricRow, fmt

Side = Literal["baseline", "champion", "candidate"]
Gated = tuple[MetricRow, list[str]]
"""A metric's row and, when it failed its gate, the reasons (one per comparison it lost)."""


@dataclass(frozen=True)
class Rule:
    """What a metric must do: beat the base by `margin` (strictly), be at least as good as the champion (named by
    `champion`) by `champion_margin`; `lower` when lower is better; `gated` when the metric decides the verdict."""

    margin: float
    champion_margin: float
    lower: bool
    gated: bool
    champion: str | None


def _compare(
    candidate: float, reference: float, margin: float, *, lower: bool, strict: bool
) -> tuple[bool, str]:
    """Whether `candidate` beats `reference` by `margin` (`strict`: by more than it; else at least by it), and what
    that required, as the report prints it ("< 2.1000", "≥ 0.8000")."""
    threshold = reference - margin if lower else reference + margin
    if lower:
        ok = candidate < threshold if strict else candidate <= threshold
    else:
        ok = candidate > threshold if strict else candidate >= threshold
    sign = ("<" if lower else ">") if strict else ("≤" if lower else "≥")
    return math.isfinite(candidate) and ok, f"{sign} {fmt(threshold)}"


def gated_row(name: str, values: dict[Side, float | None], rule: Rule, *, items: int) -> Gated:
    """One metric's row: skipped without items, reported without a verdict when not gated, else pass or FAIL against
    the base and, with a champion, against the champion (each failed comparison gives its reason)."""
    baseline, candidate, champion = values["baseline"], values["candidate"], values.get("champion")
    if candidate is None or baseline is None:
        row = MetricRow(
            name, None, None, "no items: not gated", True, "skipped", 0, baseline_result="skipped"
        )
        row.champion_result = "skipped" if rule.champion else None
        return row, []
    base_ok, required = _compare(candidate, baseline, rule.margin, lower=rule.lower, strict=True)
    champ_ok, champ_required = True, None
    if rule.champion is not None and champion is not None:
        champ_ok, champ_required = _compare(
            candidate, champion, rule.champion_margin, lower=rule.lower, strict=False
        )
    if not rule.gated:
        marked = None if champ_required is None else f"{champ_required} (not gated)"
        row = MetricRow(name, baseline, candidate, f"{required} (not gated)", True, "not gated", items)
        row.champion, row.champion_required = champion, marked
        row.champion_result = "not gated" if marked else None
        row.baseline_result = "not gated"
        return row, []
    row = MetricRow(name, baseline, candidate, required, base_ok and champ_ok, "pass", items)
    row.result = "pass" if row.passed else "FAIL"
    row.baseline_result = "pass" if base_ok else "FAIL"
    row.champion, row.champion_required = champion, champ_required
    row.champion_result = None if champ_required is None else ("pass" if champ_ok else "FAIL")
    reasons = []
    if not base_ok:
        reasons.append(
            f"{name} {fmt(candidate)} is not {'below' if rule.lower else 'above'} the baseline {fmt(baseline)} "
            f"{'minus' if rule.lower else 'plus'} the required improvement {rule.margin:g} (= {required[2:]})"
        )
    if not champ_ok:
        beats = "beats the base model but " if base_ok else ""
        reasons.append(
            f"{name} {fmt(candidate)} {beats}is not as good as the {rule.champion}'s {fmt(champion)} "
            f"(required {champ_required}, exam.champion_margin {rule.champion_margin:g})"
        )
    return row, reasons
