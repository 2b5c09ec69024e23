"""The exam's verdict as data (MetricRow, ExamReport) and as the markdown a person reads in the UI."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Result = Literal["pass", "FAIL", "not gated", "skipped"]


def fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


def _versus(required: str | None, result: Result | None) -> str:
    """One comparison's cell: what was required and its outcome ("< 2.1000: pass")."""
    if not required:
        return "—"
    return f"{required}: {result}" if result else required


@dataclass
class MetricRow:
    """One line of the exam: a metric of the base, the candidate (and the champion, when the exam names one), what the
    candidate had to beat, and the outcome.

    `required`/`baseline_result` are the comparison with the base; `champion_required`/`champion_result` the one with
    the champion (None without a champion); `passed`/`result` the metric's verdict: both comparisons together.
    """

    name: str
    baseline: float | None
    candidate: float | None
    required: str
    passed: bool
    result: Result = "pass"
    items: int = 0
    champion: float | None = None
    champion_required: str | None = None
    champion_result: Result | None = None
    baseline_result: Result | None = None


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
    champion: dict[str, Any] | None = None
    """The current release the candidate also had to beat (`Champion.to_metadata()` and its `seconds`); None: the
    base model only."""

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
        """The report as markdown: the verdict (and where it ran), what the candidate had to beat, a metric table and
        the reasons for any failure. Without a champion the table is the base against the candidate."""
        where = self.device if self.device_name == self.device else f"{self.device} ({self.device_name})"
        lines = [
            f"**Exam {'passed' if self.passed else 'FAILED'}** ({self.items_scored} held-out items scored on "
            f"{where} in {self.dtype})",
            "",
        ]
        if self.champion is None:
            lines += ["| metric | baseline | candidate | required | result |", "|---|---|---|---|---|"]
            lines += [
                f"| {r.name} | {fmt(r.baseline)} | {fmt(r.candidate)} | {r.required} | {r.result} |"
                for r in self.metrics
            ]
        else:
            lines += [
                f"Gated metrics had to beat the base model (baseline) and the {self.champion['label']}.",
                "",
                "| metric | baseline | champion | candidate | vs baseline | vs champion | result |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {r.name} | {fmt(r.baseline)} | {fmt(r.champion)} | {fmt(r.candidate)} | "
                f"{_versus(r.required, r.baseline_result)} | {_versus(r.champion_required, r.champion_result)} | "
                f"{r.result} |"
                for r in self.metrics
            ]
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
