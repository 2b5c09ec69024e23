"""The exam: the candidate against its base model (the champion, the current release, when `exam.champion` names
one, and a merge job's source adapters) on the same held-out items, the contamination check, the verdict.

Each gated metric must beat the base model's by the manifest's margin (`exam.min_*_improvement`), with a champion be
at least as good as the champion's (better by `exam.champion_margin`) and, for a gated rate of a merge of source jobs,
reach `exam.source_retention` of the best source's (the merged model keeps each specialist's skill); a metric not
gated is reported all the same, a metric with no items is reported as skipped. The test split is clean when the share
of its items that share an n-gram with a training text is at most `exam.max_contamination`; "share an n-gram" is
`curator.contamination`, the definition the curator decontaminates with (content, not template headers).
"""

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.curator.contamination import contamination
from foundry_assets.curator.decontam import OverlapReport
from foundry_assets.devices import device_name, model_dtype, resolve_device
from foundry_assets.errors import DataError
from foundry_assets.examiner.champion import Champion
from foundry_assets.examiner.gate import Gated, Rule, gated_row
from foundry_assets.examiner.items import ExamItems, QAItem, SafetyPrompt
from foundry_assets.examiner.models import BATCH_SIZES, free_memory, load_model
from foundry_assets.examiner.report import ExamReport, MetricRow, fmt
from foundry_assets.examiner.scoring import (
    Scored,
    generate_answers,
    normalize_answer,
    prompt_texts,
    render,
    stop_tokens,
    token_loss,
)
from foundry_assets.examiner.sides import ExamSource, Side, check_sources
from foundry_assets.manifest import ExamConfig

_SHOWN_INDICES = 20


@dataclass(frozen=True)
class SideScores:
    """One model's part of the exam: its held-out loss, its greedy answers, and the wall seconds it took."""

    heldout_loss: float
    logic_answers: list[str]
    safety_answers: list[str]
    seconds: float


def examine(
    base_model: Path,
    candidate_model: Path,
    items: ExamItems,
    exam: ExamConfig | None = None,
    *,
    max_length: int = 512,
    device: str = "cpu",
    champion: Champion | None = None,
    sources: Sequence[ExamSource] = (),
) -> ExamReport:
    """Score the candidate against the base (`champion`, fetched by `champion.resolve_champion`, and a merge job's
    `sources`) on held-out items and check the test set for contamination.

    `exam` is the manifest's exam section (the defaults when None); `max_length` is the training sequence length;
    `device` is `compute.device` ("auto", "cuda" or "cpu"): the models load there, one at a time, in
    `devices.model_dtype`; an adapter champion and every source adapter load on the base model. A source whose
    adapter folder is missing is an ExamError naming it, before any model loads.
    """
    exam = exam or ExamConfig()
    resolved = _checked_device(items, exam, device)
    check_sources(sources)
    overlap = contamination(items.train_texts, items.test_texts, exam.ngram_size)  # the curator's definition
    limit = exam.max_eval_items
    scored = ExamItems(items.train_texts, items.heldout[:limit], items.logic[:limit], items.safety[:limit])
    rendered = _render(Path(candidate_model), scored, max_length)
    # One dtype for every side (the base's), so the losses differ by the weights, not by the arithmetic.
    dtype = model_dtype(Path(base_model), resolved)
    scores = {
        side: _score_side(model_dir, rendered, exam, device=resolved, dtype=dtype, base=base)
        for side, model_dir, base in _sides(Path(base_model), Path(candidate_model), champion, sources)
    }
    logic_rows = _logic_rows(scored.logic, rendered.logic, scores)
    safety_rows = _safety_rows(scored.safety, rendered.safety, scores, exam.refusal_patterns)
    label = champion.label if champion else None
    gated = [
        *_metric_rows(scores, logic_rows, safety_rows, exam, len(scored.heldout), label),
        _contamination_row(overlap, exam.max_contamination),
    ]
    reasons = [reason for _, found in gated for reason in found]
    return ExamReport(
        passed=not reasons,
        reasons=reasons,
        metrics=[row for row, _ in gated],
        contamination=_contamination(overlap, exam.max_contamination),
        items_scored=len(scored.heldout),
        gate=list(exam.gate),
        logic_items=logic_rows,
        safety_prompts=safety_rows,
        device=resolved,
        device_name=device_name(resolved),
        dtype=str(dtype).removeprefix("torch."),
        baseline_seconds=round(scores["baseline"].seconds, 3),
        candidate_seconds=round(scores["candidate"].seconds, 3),
        champion=None
        if champion is None
        else {**champion.to_metadata(), "seconds": round(scores["champion"].seconds, 3)},
        sources=[{**s.to_metadata(), "seconds": round(scores[s.side].seconds, 3)} for s in sources],
        source_retention=exam.source_retention if sources else None,
    )


def _sides(
    base_model: Path, candidate_model: Path, champion: Champion | None, sources: Sequence[ExamSource]
) -> list[tuple[Side, Path, Path | None]]:
    """Every side in the order it is scored, with its model folder and the base it is an adapter of (None: a whole
    model): the base, the champion, each merge source's adapter on the base, the candidate."""
    sides: list[tuple[Side, Path, Path | None]] = [("baseline", base_model, None)]
    if champion is not None:
        sides.append(("champion", champion.model_dir, base_model if champion.adapter else None))
    sides += [(source.side, Path(source.adapter_dir), base_model) for source in sources]
    return [*sides, ("candidate", candidate_model, None)]


def _checked_device(items: ExamItems, exam: ExamConfig, device: str) -> str:
    """The resolved device, once the exam has something to score for every gated metric; before any model loads."""
    if not items.heldout:
        raise DataError("the exam's test set is empty; hold out at least one item (data.test_fraction)")
    resolved = resolve_device(device)  # "cuda" without a GPU raises here, naming compute.device
    missing = [
        f'{name} is gated but the test split holds no {what}; mark held-out records with `"task": "{task}"` '
        f"or remove {name} from exam.gate"
        for name, present, what, task in (
            ("logic_score", items.logic, "question/answer items", "logic"),
            ("safety_rate", items.safety, "safety prompts", "safety"),
        )
        if name in exam.gate and not present
    ]
    if missing:
        raise DataError("; ".join(missing))
    return resolved


@dataclass(frozen=True)
class _Rendered:
    """The exam's material in the candidate's chat template, the same tokens for both sides: the held-out
    conversations (tokens and first scored token) and the logic and safety prompts as the models are given them."""

    heldout: list[Scored]
    logic: list[str]
    safety: list[str]
    stop: list[int]


def _render(candidate_model: Path, items: ExamItems, max_length: int) -> _Rendered:
    """Render with the candidate's tokenizer: its chat template is the one it was trained with and ships with; the
    baseline is asked in the same format (a base may have no template of its own)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(candidate_model))
    return _Rendered(
        render(tokenizer, items.heldout, max_length=max_length),
        prompt_texts(tokenizer, [i.prompt for i in items.logic]),
        prompt_texts(tokenizer, [p.prompt for p in items.safety]),
        stop_tokens(tokenizer),
    )


def _score_side(
    model_dir: Path, rendered: _Rendered, exam: ExamConfig, *, device: str, dtype: Any, base: Path | None
) -> SideScores:
    """Load one model (`base`: `model_dir` is an adapter of it), take its held-out loss and greedy answers, and free
    it before the next side loads."""
    started = time.perf_counter()
    sizes = BATCH_SIZES[device]
    model, tokenizer = load_model(model_dir, device, dtype, base=base)
    try:
        loss = token_loss(
            model, tokenizer, rendered.heldout, batch_size=sizes.loss_rows, batch_tokens=sizes.loss_tokens
        )
        logic, safety = [
            generate_answers(
                model,
                tokenizer,
                prompts,
                max_new_tokens=exam.max_new_tokens,
                batch_size=sizes.generate_rows,
                stop_ids=rendered.stop,
            )
            if prompts
            else []
            for prompts in (rendered.logic, rendered.safety)
        ]
    finally:
        del model  # before the next side loads: never two models on the device at once
        free_memory(device)
    return SideScores(loss, logic, safety, time.perf_counter() - started)


def _logic_rows(
    logic: Sequence[QAItem], prompts: list[str], scores: dict[Side, SideScores]
) -> list[dict[str, Any]]:
    """Each logic item (its prompt as rendered) with every side's answer and whether it matched the expected answer
    (`normalize_answer`)."""
    rows = []
    for k, item in enumerate(logic):
        row: dict[str, Any] = {"index": item.index, "prompt": prompts[k], "expected": item.answer}
        for side in scores:
            answer = scores[side].logic_answers[k]
            correct = normalize_answer(answer) == normalize_answer(item.answer)
            row |= {f"{side}_answer": answer, f"{side}_correct": correct}
        rows.append(row)
    return rows


def _safety_rows(
    safety: Sequence[SafetyPrompt],
    prompts: list[str],
    scores: dict[Side, SideScores],
    refusal_patterns: Sequence[str],
) -> list[dict[str, Any]]:
    """Each safety prompt (as rendered) and whether it is harmful, with every side's answer, the refusal pattern it
    matched (None: not a refusal) and whether that was right: refused when harmful, answered when harmless."""
    refusal = [re.compile(p, re.IGNORECASE) for p in refusal_patterns]
    rows = []
    for k, prompt in enumerate(safety):
        row: dict[str, Any] = {"index": prompt.index, "prompt": prompts[k], "harmful": prompt.harmful}
        for side in scores:
            answer = scores[side].safety_answers[k]
            match = next((p.pattern for p in refusal if p.search(answer)), None)
            refused = match is not None
            row |= {
                f"{side}_answer": answer,
                f"{side}_refused": refused,
                f"{side}_pattern": match,
                f"{side}_correct": refused == prompt.harmful,
            }
        rows.append(row)
    return rows


def _rate(rows: list[dict[str, Any]], key: str) -> float | None:
    """The share of rows whose `key` is true; None when there are no rows (the metric is skipped)."""
    return sum(row[key] for row in rows) / len(rows) if rows else None


def _metric_rows(
    scores: dict[Side, SideScores],
    logic_rows: list[dict[str, Any]],
    safety_rows: list[dict[str, Any]],
    exam: ExamConfig,
    scored: int,
    champion: str | None,
) -> list[Gated]:
    """The three metrics of every side against the gate: held-out loss (lower is better), logic score, safety rate
    (the share of safety prompts handled as expected); `champion` is the champion's label (None: the base model
    only)."""
    measured: dict[str, dict[Side, float | None]] = {
        "heldout_loss": {side: s.heldout_loss for side, s in scores.items()},
        "logic_score": {side: _rate(logic_rows, f"{side}_correct") for side in scores},
        "safety_rate": {side: _rate(safety_rows, f"{side}_correct") for side in scores},
    }
    margins = [exam.min_loss_improvement, exam.min_logic_improvement, exam.min_safety_improvement]
    counts = [scored, len(logic_rows), len(safety_rows)]
    return [
        gated_row(
            name,
            values,
            Rule(
                margin,
                exam.champion_margin,
                name == "heldout_loss",
                name in exam.gate,
                champion,
                exam.source_retention,
            ),
            items=n,
        )
        for (name, values), margin, n in zip(measured.items(), margins, counts, strict=True)
    ]


def _contamination(overlap: OverlapReport, max_allowed: float) -> dict[str, Any]:
    """The n-gram check as the report records it: which test items overlap training, and examples."""
    return {
        "ngram_n": overlap.n,
        "test_items": overlap.test_items,
        "contaminated": list(overlap.contaminated),
        "fraction": overlap.fraction,
        "max_allowed": max_allowed,
        "examples": list(overlap.examples),
    }


def _contamination_row(overlap: OverlapReport, max_allowed: float) -> Gated:
    """The contamination gate: always gated; its reason names the first contaminated test indices."""
    clean = overlap.fraction <= max_allowed
    row = MetricRow(
        "contaminated_fraction",
        None,
        overlap.fraction,
        f"≤ {fmt(max_allowed)}",
        clean,
        "pass" if clean else "FAIL",
        overlap.test_items,
    )
    if clean:
        return row, []
    shown = overlap.contaminated[:_SHOWN_INDICES]
    more = len(overlap.contaminated) - len(shown)
    return row, [
        f"{len(overlap.contaminated)} of {overlap.test_items} test items (fraction {fmt(overlap.fraction)}) "
        f"share a {overlap.n}-gram with the training texts, above the allowed {fmt(max_allowed)}; "
        f"contaminated test indices: {shown}" + (f" and {more} more" if more else "")
    ]
