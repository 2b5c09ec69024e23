"""The examiner: the candidate against its base model (the baseline) in one exam, the contamination check, the verdict.

Metrics, each computed for the base model and for the candidate on the same held-out items:

- `heldout_loss`: token-weighted next-token loss on the test split (lower is better);
- `logic_score`: share of question/answer items whose greedy answer equals the expected answer after
  `normalize_answer` (exact match);
- `safety_rate`: share of harmful prompts whose greedy answer matches one of the refusal patterns (per prompt in
  the report, so a person can check each verdict).

A metric with no items is reported as skipped; gating a metric that has no items is an error (DataError).

The exam runs where `compute.device` says (`devices.resolve_device`: "cuda" on a node without CUDA is an error, never a
silent CPU run): both models load in the device's dtype (`devices.model_dtype`: bf16/fp16 on a GPU, float32 on the
CPU) straight onto the device, one at a time, and the report records device, dtype and seconds per side.
"""

import gc
import logging
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.curator.decontam import ngram_overlap
from foundry_assets.curator.formats import EXAM_ITEM
from foundry_assets.devices import device_name, model_dtype, resolve_device
from foundry_assets.errors import DataError
from foundry_assets.manifest import DEFAULT_REFUSAL_PATTERNS

_SHOWN_INDICES = 20
logger = logging.getLogger(__name__)


def _fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


@dataclass(frozen=True)
class BatchSizes:
    """How many held-out items go through a model at once, by device."""

    loss_rows: int
    loss_tokens: int
    generate_rows: int


BATCH_SIZES = {
    # small on the CPU (a batch there is as slow as its rows together, and pads cost real time)
    "cpu": BatchSizes(loss_rows=8, loss_tokens=4096, generate_rows=16),
    # a GPU is idle at batch 8: 32 rows × 512 tokens of an 8B model in bf16 is 4 GB of logits on a 128k vocabulary
    "cuda": BatchSizes(loss_rows=32, loss_tokens=16384, generate_rows=64),
}
LOSS_CHUNK_TOKENS = 1024
"""Logit rows upcast to float32 at a time for the loss: 1024 × a 128k vocabulary is 0.5 GB, never batch × seq × vocab."""


def _load(model_dir: Path, device: str, dtype: Any) -> tuple[Any, Any]:
    """The tokenizer and the eval-mode model, loaded in `dtype` straight onto `device`.

    `device_map` makes transformers build the model on the meta device and write each weight, already cast, where it
    belongs as it is read (transformers 5 always loads this way and ignores `low_cpu_mem_usage`), so an 8B checkpoint
    never sits whole in host memory, let alone in float32. SDPA attention is asked for explicitly: it is what makes the
    padded batches below cheap, whatever another library (Unsloth) may have patched in this process.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=dtype, device_map=device, attn_implementation="sdpa"
        )
    except ValueError as e:
        if "scaled_dot_product_attention" not in str(e):
            raise
        logger.warning(
            "%s does not support SDPA attention (%s); the exam uses its default attention", model_dir, e
        )
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, device_map=device)
    return model.eval(), tokenizer


def _free(device: str) -> None:
    """Return a dropped model's memory before the next one loads (host memory, and CUDA's cached blocks)."""
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _pad_id(tokenizer: Any) -> int:
    return int(
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    )


def _batches(lengths: Sequence[int], rows: int, tokens: int) -> list[list[int]]:
    """Item indices, longest first, in batches of at most `rows` rows and `tokens` padded tokens (≥ 1 row each).

    Sorting by length keeps the padding small; longest first means a batch that does not fit fails at once.
    Callers put each result back at its item's index, so the original order is kept.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if current and len(current) < rows and (len(current) + 1) * lengths[current[0]] <= tokens:
            current.append(i)
        else:
            batches.append([i])
    return batches


def _loss(
    model: Any, tokenizer: Any, texts: list[str], *, max_length: int, batch_size: int, batch_tokens: int
) -> float:
    import torch
    import torch.nn.functional as F

    pad_id = _pad_id(tokenizer)
    encoded = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    encoded = [ids for ids in encoded if len(ids) >= 2]
    total_nll, total_tokens = 0.0, 0
    with torch.inference_mode():
        for batch in _batches([len(ids) for ids in encoded], batch_size, batch_tokens):
            rows = [encoded[i] for i in batch]
            width = len(rows[0])
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[row, : len(ids)] = 1
            input_ids, attention = input_ids.to(model.device), attention.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            # The logits stay in the model's dtype (bf16 on a GPU); each row's real positions are upcast to float32 in
            # chunks of LOSS_CHUNK_TOKENS for the cross-entropy, so float32 logits never exist for the whole
            # batch × seq × vocab (16 GB at 32 × 512 × 128k), and padding is never scored. The sum is kept in float64
            # on the device and read once per batch (one sync, not one per chunk).
            nll = torch.zeros((), dtype=torch.float64, device=logits.device)
            for row, ids in enumerate(rows):
                for start in range(0, len(ids) - 1, LOSS_CHUNK_TOKENS):
                    stop = min(start + LOSS_CHUNK_TOKENS, len(ids) - 1)
                    chunk = F.cross_entropy(
                        logits[row, start:stop].float(), input_ids[row, start + 1 : stop + 1], reduction="sum"
                    )
                    nll += chunk.double()
            total_nll += float(nll)
            total_tokens += sum(len(ids) - 1 for ids in rows)
            del logits
    if total_tokens == 0:
        raise DataError(
            f"none of the {len(texts)} held-out texts has two or more tokens; there is nothing to score"
        )
    return total_nll / total_tokens


def heldout_loss(
    model_dir: Path,
    texts: list[str],
    *,
    max_length: int = 512,
    batch_size: int | None = None,
    device: str = "cpu",
) -> float:
    """Mean next-token negative log-likelihood over all tokens of `texts` (token-weighted), in eval mode.

    `device` is "cpu", "cuda" or "auto" (as `compute.device`); `batch_size` defaults by device (BATCH_SIZES).
    """
    if not texts:
        raise DataError("heldout_loss got no texts; give at least one held-out text")
    resolved = resolve_device(device)
    sizes = BATCH_SIZES[resolved]
    model, tokenizer = _load(Path(model_dir), resolved, model_dtype(Path(model_dir), resolved))
    try:
        return _loss(
            model,
            tokenizer,
            texts,
            max_length=max_length,
            batch_size=batch_size or sizes.loss_rows,
            batch_tokens=sizes.loss_tokens if batch_size is None else batch_size * max_length,
        )
    finally:
        del model
        _free(resolved)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy answers to `prompts` in their order (left-padded batches of similar length on the model's device), each
    cut at its first line break."""
    import torch

    answers = [""] * len(prompts)
    pad_id = _pad_id(tokenizer)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    with torch.inference_mode():
        for batch in _batches([len(ids) for ids in encoded], batch_size, sys.maxsize):
            rows = [encoded[i] for i in batch]
            width = len(rows[0])
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for row, ids in enumerate(rows):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, width - len(ids) :] = 1
            out = model.generate(
                input_ids=input_ids.to(model.device),
                attention_mask=attention.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for index, generated in zip(batch, out[:, width:].tolist(), strict=True):
                text = tokenizer.decode(generated, skip_special_tokens=True)
                answers[index] = text.strip().split("\n", 1)[0].strip()
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


def task_items(test_rows: Sequence[dict[str, Any]]) -> tuple[list[QAItem], list[SafetyPrompt]]:
    """The exam's logic items and harmful prompts: the curated test rows the curator marked with an `exam` item
    (`curator.formats.exam_item`: the record's task, the prompt a model is given and the expected answer)."""
    logic: list[QAItem] = []
    safety: list[SafetyPrompt] = []
    for index, row in enumerate(test_rows):
        item = row.get(EXAM_ITEM)
        if not item:
            continue
        if item["task"] == "logic":
            logic.append(QAItem(item["prompt"], item["answer"], index))
        else:
            safety.append(SafetyPrompt(item["prompt"], index))
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
    device: str = "cpu"
    device_name: str = "cpu"
    dtype: str = "float32"
    baseline_seconds: float = 0.0
    """Wall seconds of the base model's side: loading, loss and answers."""
    candidate_seconds: float = 0.0
    """Wall seconds of the candidate's side: loading, loss and answers."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (metadata, audit trail, the published exam report)."""
        return asdict(self)

    def metric(self, name: str) -> MetricRow:
        return next(row for row in self.metrics if row.name == name)

    def to_markdown(self) -> str:
        """The report as markdown: the verdict (and where it ran), a metric table and the reasons for any failure."""
        where = self.device if self.device_name == self.device else f"{self.device} ({self.device_name})"
        lines = [
            f"**Exam {'passed' if self.passed else 'FAILED'}** ({self.items_scored} held-out items scored on "
            f"{where} in {self.dtype})",
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
    """Score the candidate against the base on held-out items and check the test set for contamination.

    `device` is `compute.device` ("auto", "cuda" or "cpu"); the models load there, in `devices.model_dtype`.
    """
    if not test_texts:
        raise DataError("the exam's test set is empty; hold out at least one item (data.test_fraction)")
    if max_items < 1:
        raise DataError(f"max_items is {max_items}; it must be at least 1")
    resolved = resolve_device(device)  # "cuda" without a GPU raises here, naming compute.device
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
    # One dtype for both sides (the base's), so the two losses differ by the weights, not by the arithmetic.
    dtype = model_dtype(Path(base_model), resolved)
    sizes = BATCH_SIZES[resolved]
    scores: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for side, model_dir in (("baseline", base_model), ("candidate", candidate_model)):
        started = time.perf_counter()
        model, tokenizer = _load(Path(model_dir), resolved, dtype)
        try:
            side_scores: dict[str, Any] = {
                "heldout_loss": _loss(
                    model,
                    tokenizer,
                    scored,
                    max_length=max_length,
                    batch_size=sizes.loss_rows,
                    batch_tokens=sizes.loss_tokens,
                )
            }
            for key, prompts in (
                ("logic_answers", [i.prompt for i in logic]),
                ("safety_answers", [p.prompt for p in safety]),
            ):
                if prompts:
                    side_scores[key] = generate_answers(
                        model,
                        tokenizer,
                        prompts,
                        max_new_tokens=max_new_tokens,
                        batch_size=sizes.generate_rows,
                    )
        finally:
            del model  # before the next side loads: never two models on the device at once
            _free(resolved)
        scores[side] = side_scores
        seconds[side] = time.perf_counter() - started

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
        device=resolved,
        device_name=device_name(resolved),
        dtype=str(dtype).removeprefix("torch."),
        baseline_seconds=round(seconds["baseline"], 3),
        candidate_seconds=round(seconds["candidate"], 3),
    )
