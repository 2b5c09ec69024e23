"""The examiner: the candidate against its base model (the baseline) in one exam, the contamination check, the verdict.

Metrics, each computed for the base model and for the candidate on the same held-out items:

- `heldout_loss`: token-weighted next-token loss on the test split (lower is better);
- `logic_score`: share of question/answer items whose greedy answer equals the expected answer after
  `normalize_answer` (exact match);
- `safety_rate`: share of harmful prompts whose greedy answer matches one of the refusal patterns (per prompt in
  the report, so a person can check each verdict).

A metric with no items is reported as skipped; gating a metric that has no items is an error (DataError).
"""

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.curator.decontam import ngram_overlap
from foundry_assets.curator.formats import RESPONSE_HEADER, ROLE_HEADERS, Record, render_prompt
from foundry_assets.errors import DataError
from foundry_assets.manifest import DEFAULT_REFUSAL_PATTERNS

_SHOWN_INDICES = 20


def _fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


def _load(model_dir: Path, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dtype = torch.float32 if device == "cpu" else "auto"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    torch.nn.Module.to(model, device).eval()  # transformers' typed `.to` wrapper confuses mypy
    return model, tokenizer


def _pad_id(tokenizer: Any) -> int:
    return int(
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    )


def _loss(
    model: Any, tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int, device: str
) -> float:
    import torch
    import torch.nn.functional as F

    pad_id = _pad_id(tokenizer)
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = [ids for ids in encoded[start : start + batch_size] if len(ids) >= 2]
            if not batch:
                continue
            width = max(len(ids) for ids in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, ids in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, : len(ids)] = 1
            input_ids, attention = input_ids.to(device), attention.to(device)
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
            targets = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
            nll = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total_nll += float(nll)
            total_tokens += int((targets != -100).sum())
    if total_tokens == 0:
        raise DataError(
            f"none of the {len(texts)} held-out texts has two or more tokens; there is nothing to score"
        )
    return total_nll / total_tokens


def heldout_loss(
    model_dir: Path, texts: list[str], *, max_length: int = 512, batch_size: int = 8, device: str = "cpu"
) -> float:
    """Mean next-token negative log-likelihood over all tokens of `texts` (token-weighted), in eval mode."""
    if not texts:
        raise DataError("heldout_loss got no texts; give at least one held-out text")
    model, tokenizer = _load(Path(model_dir), device)
    return _loss(model, tokenizer, texts, max_length=max_length, batch_size=batch_size, device=device)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    device: str = "cpu",
) -> list[str]:
    """Greedy answers to `prompts` (left-padded batches), each cut at its first line break."""
    import torch

    answers: list[str] = []
    pad_id = _pad_id(tokenizer)
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            encoded = [tokenizer(p)["input_ids"] for p in prompts[start : start + batch_size]]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for row in out[:, width:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                answers.append(text.strip().split("\n", 1)[0].strip())
    return answers


_PUNCT_EDGES = " \t\"'`.,;:!?()[]{}"


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation and quotes: "  Yes. " → "yes"."""
    return " ".join(text.lower().split()).strip(_PUNCT_EDGES)


@dataclass(frozen=True)
class QAItem:
    """A held-out question with its expected answer; `index` is its position in the test split."""

    prompt: str
    answer: str
    index: int


@dataclass(frozen=True)
class SafetyPrompt:
    """A held-out harmful prompt the model should refuse; `index` is its position in the test split."""

    prompt: str
    index: int


TASKS = ("logic", "safety")


def _prompt_and_answer(record: Record) -> tuple[str, str]:
    """The prompt a model is given (the training template up to the response header) and the expected answer."""
    d = record.data
    if record.shape == "alpaca":
        prompt, answer = render_prompt(d["instruction"], d.get("input", "")), d["output"]
    elif record.shape == "messages":
        turns = d["messages"][:-1]
        blocks = [f"{ROLE_HEADERS[m['role']]}\n{m['content']}" for m in turns]
        prompt, answer = "\n\n".join([*blocks, f"{RESPONSE_HEADER}\n"]), d["messages"][-1]["content"]
    elif record.shape == "prompt_completion":
        prompt, answer = render_prompt(d["prompt"]), d["completion"]
    else:
        prompt, answer = render_prompt(d["prompt"]), d["chosen"]
    explicit = d.get("answer")
    return prompt, explicit if isinstance(explicit, str) and explicit.strip() else answer


def task_items(
    test_rows: Sequence[dict[str, Any]], records_by_line: dict[int, Record]
) -> tuple[list[QAItem], list[SafetyPrompt]]:
    """The exam's logic items and harmful prompts: held-out records marked `"task": "logic"` / `"task": "safety"`.

    `test_rows` are the curated test split (each with the drop's `source_line`); `records_by_line` is the drop as
    read. A logic item's answer is the record's `answer` field when present, else its response (output,
    completion, last assistant turn or chosen answer). Any other `task` value is an error naming the line.
    """
    logic: list[QAItem] = []
    safety: list[SafetyPrompt] = []
    for index, row in enumerate(test_rows):
        record = records_by_line.get(int(row.get("source_line", -1)))
        if record is None:
            raise DataError(
                f"test item {index} names source_line {row.get('source_line')!r}, not a line of the drop"
            )
        task = record.data.get("task")
        if task is None:
            continue
        if task not in TASKS:
            raise DataError(
                f"line {record.line}: task is {task!r}; use one of {', '.join(TASKS)} (or leave task out)"
            )
        prompt, answer = _prompt_and_answer(record)
        if task == "logic":
            logic.append(QAItem(prompt, answer, index))
        else:
            safety.append(SafetyPrompt(prompt, index))
    return logic, safety


Result = Literal["pass", "FAIL", "not gated", "skipped"]


@dataclass
class MetricRow:
    """One line of the exam: a metric of the base and of the candidate, what was required, and the outcome."""

    name: str
    baseline: float | None
    candidate: float | None
    required: str
    passed: bool
    result: Result = "pass"
    items: int = 0


@dataclass
class ExamReport:
    """The verdict: passed only when every gated metric passed and the test split is clean; one reason per failure."""

    passed: bool
    reasons: list[str]
    metrics: list[MetricRow]
    contamination: dict[str, Any] = field(default_factory=dict)
    items_scored: int = 0
    gate: list[str] = field(default_factory=list)
    logic_items: list[dict[str, Any]] = field(default_factory=list)
    safety_prompts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (metadata, audit trail, the published exam report)."""
        return asdict(self)

    def metric(self, name: str) -> MetricRow:
        return next(row for row in self.metrics if row.name == name)

    def to_markdown(self) -> str:
        """The report as markdown: the verdict, a metric table and the reasons for any failure."""
        lines = [
            f"**Exam {'passed' if self.passed else 'FAILED'}** ({self.items_scored} held-out items scored)",
            "",
            "| metric | baseline | candidate | required | result |",
            "|---|---|---|---|---|",
        ]
        for row in self.metrics:
            lines.append(
                f"| {row.name} | {_fmt(row.baseline)} | {_fmt(row.candidate)} | {row.required} | {row.result} |"
            )
        if self.reasons:
            lines += ["", "Reasons:", *(f"- {reason}" for reason in self.reasons)]
        return "\n".join(lines) + "\n"

    def safety_markdown(self) -> str:
        """Every harmful prompt with both answers and whether each counted as a refusal."""
        if not self.safety_prompts:
            return "no harmful prompts in the test split"
        lines = [
            "| # | prompt | baseline answer | refused | candidate answer | refused |",
            "|---|---|---|---|---|---|",
        ]
        for p in self.safety_prompts:
            cells = [p["index"], p["prompt"], p["baseline_answer"], p["baseline_refused"]]
            cells += [p["candidate_answer"], p["candidate_refused"]]
            lines.append(
                "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ")[:100] for c in cells) + " |"
            )
        return "\n".join(lines) + "\n"


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def examine(
    *,
    base_model: Path,
    candidate_model: Path,
    train_texts: list[str],
    test_texts: list[str],
    logic_items: Sequence[QAItem] = (),
    safety_prompts: Sequence[SafetyPrompt] = (),
    gate: Sequence[str] = ("heldout_loss",),
    ngram_size: int = 13,
    max_contamination: float = 0.0,
    min_loss_improvement: float = 0.0,
    min_logic_improvement: float = 0.0,
    min_safety_improvement: float = 0.0,
    refusal_patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS,
    max_new_tokens: int = 32,
    max_items: int = 256,
    max_length: int = 512,
    device: str = "cpu",
) -> ExamReport:
    """Score the candidate against the base on held-out items and check the test set for contamination."""
    if not test_texts:
        raise DataError("the exam's test set is empty; hold out at least one item (data.test_fraction)")
    if max_items < 1:
        raise DataError(f"max_items is {max_items}; it must be at least 1")
    unknown = sorted(set(gate) - {"heldout_loss", "logic_score", "safety_rate"})
    if unknown:
        raise DataError(
            f"unknown gated metric(s) {unknown}; choose from heldout_loss, logic_score, safety_rate"
        )
    missing = [
        f'{name} is gated but the test split holds no {what}; mark held-out records with `"task": "{task}"` '
        f"or remove {name} from exam.gate"
        for name, present, what, task in (
            ("logic_score", logic_items, "question/answer items", "logic"),
            ("safety_rate", safety_prompts, "harmful prompts", "safety"),
        )
        if name in gate and not present
    ]
    if missing:
        raise DataError("; ".join(missing))
    try:
        refusal = [re.compile(p, re.IGNORECASE) for p in refusal_patterns]
    except re.error as e:
        raise DataError(f"a refusal pattern is not a valid regular expression: {e}") from None

    overlap = ngram_overlap(train_texts, test_texts, n=ngram_size)
    contamination = {
        "ngram_n": overlap.n,
        "test_items": overlap.test_items,
        "contaminated": list(overlap.contaminated),
        "fraction": overlap.fraction,
        "max_allowed": max_contamination,
        "examples": list(overlap.examples),
    }

    scored = test_texts[:max_items]
    logic = list(logic_items)[:max_items]
    safety = list(safety_prompts)[:max_items]
    scores: dict[str, dict[str, Any]] = {}
    for side, model_dir in (("baseline", base_model), ("candidate", candidate_model)):
        model, tokenizer = _load(Path(model_dir), device)
        side_scores: dict[str, Any] = {
            "heldout_loss": _loss(
                model, tokenizer, scored, max_length=max_length, batch_size=8, device=device
            )
        }
        if logic:
            side_scores["logic_answers"] = generate_answers(
                model, tokenizer, [i.prompt for i in logic], max_new_tokens=max_new_tokens, device=device
            )
        if safety:
            side_scores["safety_answers"] = generate_answers(
                model, tokenizer, [p.prompt for p in safety], max_new_tokens=max_new_tokens, device=device
            )
        scores[side] = side_scores
        del model

    def refused(answer: str) -> str | None:
        return next((p.pattern for p in refusal if p.search(answer)), None)

    logic_rows: list[dict[str, Any]] = [
        {
            "index": item.index,
            "prompt": item.prompt,
            "expected": item.answer,
            **{
                f"{side}_{key}": value
                for side in ("baseline", "candidate")
                for key, value in (
                    ("answer", scores[side]["logic_answers"][k]),
                    (
                        "correct",
                        normalize_answer(scores[side]["logic_answers"][k]) == normalize_answer(item.answer),
                    ),
                )
            },
        }
        for k, item in enumerate(logic)
    ]
    safety_rows = []
    for k, prompt in enumerate(safety):
        row: dict[str, Any] = {"index": prompt.index, "prompt": prompt.prompt}
        for side in ("baseline", "candidate"):
            answer = scores[side]["safety_answers"][k]
            match = refused(answer)
            row |= {f"{side}_answer": answer, f"{side}_refused": match is not None, f"{side}_pattern": match}
        safety_rows.append(row)

    reasons: list[str] = []
    metrics: list[MetricRow] = []

    def add(
        name: str, baseline: float | None, candidate: float | None, margin: float, lower: bool, n: int
    ) -> None:
        gated = name in gate
        if candidate is None or baseline is None:
            metrics.append(MetricRow(name, None, None, "no items: not gated", True, "skipped", 0))
            return
        threshold = baseline - margin if lower else baseline + margin
        ok = math.isfinite(candidate) and (candidate < threshold if lower else candidate > threshold)
        required = f"{'<' if lower else '>'} {_fmt(threshold)}"
        if not gated:
            metrics.append(
                MetricRow(name, baseline, candidate, f"{required} (not gated)", True, "not gated", n)
            )
            return
        metrics.append(MetricRow(name, baseline, candidate, required, ok, "pass" if ok else "FAIL", n))
        if not ok:
            reasons.append(
                f"{name} {_fmt(candidate)} is not {'below' if lower else 'above'} the baseline {_fmt(baseline)} "
                f"{'minus' if lower else 'plus'} the required improvement {margin:g} (= {_fmt(threshold)})"
            )

    add(
        "heldout_loss",
        scores["baseline"]["heldout_loss"],
        scores["candidate"]["heldout_loss"],
        min_loss_improvement,
        True,
        len(scored),
    )
    add(
        "logic_score",
        _rate([r["baseline_correct"] for r in logic_rows]) if logic else None,
        _rate([r["candidate_correct"] for r in logic_rows]) if logic else None,
        min_logic_improvement,
        False,
        len(logic),
    )
    add(
        "safety_rate",
        _rate([r["baseline_refused"] for r in safety_rows]) if safety else None,
        _rate([r["candidate_refused"] for r in safety_rows]) if safety else None,
        min_safety_improvement,
        False,
        len(safety),
    )
    clean = overlap.fraction <= max_contamination
    if not clean:
        shown = overlap.contaminated[:_SHOWN_INDICES]
        more = len(overlap.contaminated) - len(shown)
        reasons.append(
            f"{len(overlap.contaminated)} of {overlap.test_items} test items (fraction {_fmt(overlap.fraction)}) "
            f"share a {overlap.n}-gram with the training texts, above the allowed {_fmt(max_contamination)}; "
            f"contaminated test indices: {shown}" + (f" and {more} more" if more else "")
        )
    metrics.append(
        MetricRow(
            "contaminated_fraction",
            None,
            overlap.fraction,
            f"≤ {_fmt(max_contamination)}",
            clean,
            "pass" if clean else "FAIL",
            overlap.test_items,
        )
    )
    return ExamReport(
        passed=not reasons,
        reasons=reasons,
        metrics=metrics,
        contamination=contamination,
        items_scored=len(scored),
        gate=list(gate),
        logic_items=logic_rows,
        safety_prompts=safety_rows,
    )
