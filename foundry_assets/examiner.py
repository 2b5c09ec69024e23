"""The examiner: held-out loss of a candidate against its base model, the contamination check and the verdict."""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from foundry_assets.curator.decontam import ngram_overlap
from foundry_assets.errors import DataError

_SHOWN_INDICES = 20


def _fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


def heldout_loss(
    model_dir: Path, texts: list[str], *, max_length: int = 512, batch_size: int = 8, device: str = "cpu"
) -> float:
    """Mean next-token negative log-likelihood over all tokens of `texts` (token-weighted), in eval mode."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not texts:
        raise DataError("heldout_loss got no texts; give at least one held-out text")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dtype = torch.float32 if device == "cpu" else "auto"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    torch.nn.Module.to(model, device).eval()  # transformers' typed `.to` wrapper confuses mypy
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
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


@dataclass
class MetricRow:
    """One line of the exam: a metric of the base and of the candidate, what was required, and the outcome."""

    name: str
    baseline: float | None
    candidate: float
    required: str
    passed: bool


@dataclass
class ExamReport:
    """The verdict: passed only when every metric passed; one reason per failure."""

    passed: bool
    reasons: list[str]
    metrics: list[MetricRow]
    contamination: dict[str, Any] = field(default_factory=dict)
    items_scored: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (metadata, audit trail, the published exam report)."""
        return asdict(self)

    def to_markdown(self) -> str:
        """The report as markdown: the verdict, a metric table and the reasons for any failure."""
        lines = [
            f"**Exam {'passed' if self.passed else 'FAILED'}** ({self.items_scored} held-out items scored)",
            "",
            "| metric | baseline | candidate | required | result |",
            "|---|---|---|---|---|",
        ]
        for row in self.metrics:
            result = "pass" if row.passed else "FAIL"
            lines.append(
                f"| {row.name} | {_fmt(row.baseline)} | {_fmt(row.candidate)} | {row.required} | {result} |"
            )
        if self.reasons:
            lines += ["", "Reasons:", *(f"- {reason}" for reason in self.reasons)]
        return "\n".join(lines) + "\n"


def examine(
    *,
    base_model: Path,
    candidate_model: Path,
    train_texts: list[str],
    test_texts: list[str],
    ngram_size: int = 13,
    max_contamination: float = 0.0,
    min_loss_improvement: float = 0.0,
    max_items: int = 256,
    max_length: int = 512,
    device: str = "cpu",
) -> ExamReport:
    """Score the candidate against the base on held-out texts and check the test set for contamination."""
    if not test_texts:
        raise DataError("the exam's test set is empty; hold out at least one item (data.test_fraction)")
    if max_items < 1:
        raise DataError(f"max_items is {max_items}; it must be at least 1")

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
    kwargs: dict[str, Any] = {"max_length": max_length, "device": device}
    baseline = heldout_loss(Path(base_model), scored, **kwargs)
    candidate = heldout_loss(Path(candidate_model), scored, **kwargs)
    threshold = baseline - min_loss_improvement
    loss_ok = math.isfinite(candidate) and candidate < threshold
    clean = overlap.fraction <= max_contamination

    reasons: list[str] = []
    if not loss_ok:
        reasons.append(
            f"held-out loss {_fmt(candidate)} is not below the baseline {_fmt(baseline)} minus the required "
            f"improvement {min_loss_improvement:g} (= {_fmt(threshold)})"
        )
    if not clean:
        shown = overlap.contaminated[:_SHOWN_INDICES]
        more = len(overlap.contaminated) - len(shown)
        reasons.append(
            f"{len(overlap.contaminated)} of {overlap.test_items} test items (fraction {_fmt(overlap.fraction)}) "
            f"share a {overlap.n}-gram with the training texts, above the allowed {_fmt(max_contamination)}; "
            f"contaminated test indices: {shown}" + (f" and {more} more" if more else "")
        )
    metrics = [
        MetricRow("heldout_loss", baseline, candidate, f"< {_fmt(threshold)}", loss_ok),
        MetricRow("contaminated_fraction", None, overlap.fraction, f"≤ {_fmt(max_contamination)}", clean),
    ]
    return ExamReport(
        passed=loss_ok and clean,
        reasons=reasons,
        metrics=metrics,
        contamination=contamination,
        items_scored=len(scored),
    )
