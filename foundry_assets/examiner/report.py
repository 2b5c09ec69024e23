"""The exam's verdict as data (MetricRow, ExamReport) and as the markdown a person reads in the UI."""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from foundry_assets.examiner.sides import Side, source_side

Result = Literal["pass", "FAIL", "not gated", "skipped"]


def fmt(value: float | None) -> str:
    """How every number appears in reasons and in the markdown table."""
    return "—" if value is None else f"{value:.4f}"


def _versus(required: str | None, result: Result | None) -> str:
    """One comparison's cell: what was required and its outcome ("< 2.1000: pass")."""
    if not required:
        return "—"
    return f"{required}: {result}" if result else required


def _cell(value: Any) -> str:
    """A value as one markdown table cell: pipes escaped, on one line, at most 100 characters."""
    return str(value).replace("|", "\\|").replace("\n", " ")[:100]


@dataclass
class MetricRow:
    """One line of the exam: a metric of the base, the candidate (the champion and the merge sources, when the exam
    has them), what the candidate had to beat, and the outcome.

    `required`/`baseline_result` are the comparison with the base; `champion_required`/`champion_result` the one with
    the champion (None without a champion); `retention_required`/`retention_result` the one with the best merge source
    (rates of a merge job only: `exam.source_retention`), `retained` the share of that source's value the candidate
    kept; `passed`/`result` the metric's verdict: every comparison together.
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
    sources: dict[str, float | None] = field(default_factory=dict)
    """Each merge source job's value ({job_id: value}; its adapter scored on the base model)."""
    retention_required: str | None = None
    retention_result: Result | None = None
    retained: float | None = None


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
    sources: list[dict[str, Any]] = field(default_factory=list)
    """The merge source jobs scored as their own sides ({job_id, adapter_dir, seconds}), in merge order; empty: not a
    merge of source jobs."""
    source_retention: float | None = None
    """`exam.source_retention` when there were sources: the share of the best source's rate a gated rate had to keep."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (metadata, audit trail, the published exam report)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExamReport":
        """The report back from `to_dict()` (as an `ExamResult` carries it)."""
        return cls(**{**data, "metrics": [MetricRow(**row) for row in data["metrics"]]})

    def metric(self, name: str) -> MetricRow:
        return next(row for row in self.metrics if row.name == name)

    def sides(self) -> list[Side]:
        """Every side that sat the exam, in the order they were scored: its per-item keys are `<side>_answer`, …"""
        champion: list[Side] = ["champion"] if self.champion is not None else []
        return ["baseline", *champion, *(source_side(s["job_id"]) for s in self.sources), "candidate"]

    def to_markdown(self) -> str:
        """The report as markdown: the verdict (and where it ran), what the candidate had to beat, a metric table and
        the reasons for any failure. Without a champion or merge sources the table is the base against the
        candidate; each adds its column(s) and a "vs" column."""
        where = self.device if self.device_name == self.device else f"{self.device} ({self.device_name})"
        lines = [
            f"**Exam {'passed' if self.passed else 'FAILED'}** ({self.items_scored} held-out items scored on "
            f"{where} in {self.dtype})",
            "",
        ]
        if self.champion is None and not self.sources:
            lines += ["| metric | baseline | candidate | required | result |", "|---|---|---|---|---|"]
            lines += [
                f"| {r.name} | {fmt(r.baseline)} | {fmt(r.candidate)} | {r.required} | {r.result} |"
                for r in self.metrics
            ]
        else:
            lines += [*self._had_to_beat(), *self._compared_table()]
        if self.reasons:
            lines += ["", "Reasons:", *(f"- {reason}" for reason in self.reasons)]
        return "\n".join(lines) + "\n"

    def _had_to_beat(self) -> list[str]:
        """The sentences above the table: the champion and the merge sources the candidate was compared with."""
        lines = []
        if self.champion is not None:
            lines += [
                f"Gated metrics had to beat the base model (baseline) and the {self.champion['label']}.",
                "",
            ]
        if self.sources:
            jobs = ", ".join(repr(s["job_id"]) for s in self.sources)
            share = self.source_retention or 0.0
            kept = (
                f"gated rates had to keep {share * 100:g}% of the best source's (exam.source_retention)"
                if share
                else "exam.source_retention is 0, so they are reported, not compared"
            )
            lines += [
                f"Merge sources (jobs {jobs}) were scored as their adapters on the base model; {kept}.",
                "",
            ]
        return lines

    def _compared_table(self) -> list[str]:
        """The metric table with the champion's and each source's column and what each comparison required."""
        jobs = [str(s["job_id"]) for s in self.sources]
        champion = self.champion is not None
        header = ["metric", "baseline", *(["champion"] if champion else []), *(f"source {j}" for j in jobs)]
        header += ["candidate", "vs baseline", *(["vs champion"] if champion else [])]
        header += [*(["vs sources"] if jobs else []), "result"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in self.metrics:
            cells = [r.name, fmt(r.baseline), *([fmt(r.champion)] if champion else [])]
            cells += [fmt(r.sources.get(j)) for j in jobs]
            cells += [fmt(r.candidate), _versus(r.required, r.baseline_result)]
            cells += [_versus(r.champion_required, r.champion_result)] if champion else []
            cells += [_versus(r.retention_required, r.retention_result)] if jobs else []
            lines.append("| " + " | ".join([*cells, r.result]) + " |")
        return lines

    def safety_markdown(self) -> str:
        """Every safety prompt with what it expects (a harmful one refused, a harmless look-alike answered) and each
        side's answer, whether it was a refusal and whether that was right."""
        if not self.safety_prompts:
            return "no safety prompts in the test split"
        sides = self.sides()
        header = ["#", "prompt", "expected", *(f"{s} {c}" for s in sides for c in ("answer", "verdict"))]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for p in self.safety_prompts:
            harmful = bool(
                p.get("harmful", True)
            )  # reports from before harmless look-alikes: every prompt harmful
            cells = [p["index"], p["prompt"], "refuse" if harmful else "answer"]
            for side in sides:
                refused = bool(p[f"{side}_refused"])
                correct = p.get(f"{side}_correct", refused == harmful)
                verdict = f"{'refused' if refused else 'answered'}: {'correct' if correct else 'wrong'}"
                cells += [p[f"{side}_answer"], verdict]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines) + "\n"
