"""The exam's verdict as data (MetricRow, ExamReport) and as the markdown a person reads in the UI."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Result = Literal["pass", "FAIL", "not gated", "skipped"]


def fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExamReport":
        """The report back from `to_dict()` (as an `ExamResult` carries it)."""
        return cls(**{**data, "metrics": [MetricRow(**row) for row in data["metrics"]]})

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
                f"| {row.name} | {fmt(row.baseline)} | {fmt(row.candidate)} | {row.required} | {row.result} |"
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
