"""The gate of one metric: the candidate against the base model (strictly better, by `exam.min_*_improvement`), when
the exam names one against the champion (at least as good, better by `exam.champion_margin`) and, for a merge job's
rates, against its merge sources (at least `exam.source_retention` of the best source's: the skill is kept)."""

import math
from dataclasses import dataclass

from foundry_assets.examiner.report import MetricRow, Result, fmt
from foundry_assets.examiner.sides import SOURCE_PREFIX, Side

Gated = tuple[MetricRow, list[str]]
"""A metric's row and, when it failed its gate, the reasons (one per comparison it lost)."""

ROUNDING = 1e-9
"""Slack of the retention comparison: a rate exactly at `source_retention × best` passes whatever the float rounding
of the product (0.9 × 0.8 is 0.7200000000000001, above 18/25)."""


@dataclass(frozen=True)
class Rule:
    """What a metric must do: beat the base by `margin` (strictly), be at least as good as the champion (named by
    `champion`) by `champion_margin`, and keep `retention` of the best merge source's value; `lower` when lower is
    better; `gated` when the metric decides the verdict.

    Retention applies to rates only (`lower` false): a share of a skill is meaningful, a share of a loss is not, so a
    source's held-out loss is reported beside the others but compared with nothing. `retention` 0: the sources are
    reported, not compared."""

    margin: float
    champion_margin: float
    lower: bool
    gated: bool
    champion: str | None
    retention: float = 0.0


@dataclass(frozen=True)
class Retention:
    """The candidate against the best merge source on one rate: that source's job and value, the threshold
    (`retention × best`), the share of it the candidate kept (None when the best is 0) and whether it kept enough."""

    job_id: str
    best: float
    threshold: float
    kept: float | None
    ok: bool


def retention(candidate: float, sources: dict[str, float | None], share: float) -> Retention | None:
    """The retention comparison on a rate (None without a scored source): the candidate must reach `share` of the
    best source's value; at exactly the threshold it passes."""
    scored = {job: value for job, value in sources.items() if value is not None}
    if not scored:
        return None
    job = max(scored, key=lambda j: scored[j])  # the specialist of this skill; on a tie the first listed
    best = scored[job]
    threshold = share * best
    ok = math.isfinite(candidate) and candidate >= threshold - ROUNDING
    return Retention(job, best, threshold, candidate / best if best > 0 else None, ok)


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


def _percent(share: float) -> str:
    return f"{share * 100:g}%"


def gated_row(name: str, values: dict[Side, float | None], rule: Rule, *, items: int) -> Gated:
    """One metric's row: skipped without items, reported without a verdict when not gated, else pass or FAIL against
    the base and, with a champion, against the champion and, for a rate with merge sources, against the best source
    (each failed comparison gives its reason). `values` holds every side's value (a source's under `source_side`)."""
    baseline, candidate, champion = values["baseline"], values["candidate"], values.get("champion")
    sources = {
        side.removeprefix(SOURCE_PREFIX): v for side, v in values.items() if side.startswith(SOURCE_PREFIX)
    }
    if candidate is None or baseline is None:
        row = MetricRow(
            name, None, None, "no items: not gated", True, "skipped", 0, baseline_result="skipped"
        )
        row.champion_result = "skipped" if rule.champion else None
        row.sources, row.retention_result = sources, "skipped" if sources and not rule.lower else None
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
        _retained(row, sources, rule)
        return row, []
    row = MetricRow(name, baseline, candidate, required, base_ok and champ_ok, "pass", items)
    row.result = _outcome(row.passed)
    row.baseline_result = _outcome(base_ok)
    row.champion, row.champion_required = champion, champ_required
    row.champion_result = None if champ_required is None else _outcome(champ_ok)
    return row, [*_reasons(row, rule, base_ok, champ_ok), *_retained(row, sources, rule)]


def _outcome(ok: bool) -> Result:
    return "pass" if ok else "FAIL"


def _retained(row: MetricRow, sources: dict[str, float | None], rule: Rule) -> list[str]:
    """The row's merge source columns: each source's value and, for a rate, the share of the best source's the
    candidate kept and the retention outcome ("not gated" when the metric or `exam.source_retention` does not gate
    it). A retention that failed fails the row; its reason is returned."""
    row.sources = sources
    kept = None if rule.lower or row.candidate is None else retention(row.candidate, sources, rule.retention)
    if kept is None:  # a loss, or no source scored
        return []
    row.retained, row.retention_result = kept.kept, "not gated"
    if rule.retention == 0:
        return []
    required = f"≥ {fmt(kept.threshold)} ({_percent(rule.retention)} of job {kept.job_id!r})"
    if row.result == "not gated":
        row.retention_required = f"{required} (not gated)"
        return []
    row.retention_required, row.retention_result = required, _outcome(kept.ok)
    if kept.ok:
        return []
    row.passed, row.result = False, "FAIL"
    return [_retention_reason(row.name, row.candidate, kept, rule.retention)]


def _reasons(row: MetricRow, rule: Rule, base_ok: bool, champ_ok: bool) -> list[str]:
    """The reasons of a gated row's lost comparisons with the base and the champion."""
    name, candidate, baseline = row.name, row.candidate, row.baseline
    reasons = []
    if not base_ok:
        reasons.append(
            f"{name} {fmt(candidate)} is not {'below' if rule.lower else 'above'} the baseline {fmt(baseline)} "
            f"{'minus' if rule.lower else 'plus'} the required improvement {rule.margin:g} (= {row.required[2:]})"
        )
    if not champ_ok:
        beats = "beats the base model but " if base_ok else ""
        reasons.append(
            f"{name} {fmt(candidate)} {beats}is not as good as the {rule.champion}'s {fmt(row.champion)} "
            f"(required {row.champion_required}, exam.champion_margin {rule.champion_margin:g})"
        )
    return reasons


def _retention_reason(name: str, candidate: float | None, kept: Retention, share: float) -> str:
    """Why a merged model lost a skill: its value, the share of the best source's it kept, and what was required."""
    shown = "—" if kept.kept is None else f"{kept.kept:.0%}"
    return (
        f"{name} {fmt(candidate)} keeps {shown} of the best source's (job {kept.job_id!r}: {fmt(kept.best)}); "
        f"exam.source_retention requires {_percent(share)} (≥ {fmt(kept.threshold)})"
    )
