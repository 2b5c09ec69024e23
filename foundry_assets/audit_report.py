"""The auditor's report: a job's whole chain, each link read from the audit trail AND the Dagster event log.

Every value is taken from both witnesses (and, where the file is still on disk, recomputed) and compared: the audit
trail record that each asset's `audit_head` points at, against that asset's latest materialization metadata for the
job's partition. Any disagreement, a missing link or a broken hash chain makes the report fail. No Dagster in here:
the event log arrives as plain dicts (`defs/event_log.py` reads them from an instance).
"""

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from foundry_assets.audit import verify_audit_log
from foundry_assets.audit_events import STAGE_EVENTS, Event
from foundry_assets.hashing import sha256_file, sha256_text, sha256_tree, tree_digest
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher.base import HASH_MANIFEST

GATE_CHECK = "exam_report_passes_gate"
Status = Literal["ok", "MISMATCH", "MISSING", "info"]


@dataclass
class Item:
    """One line of the report: a value as the trail, the event log and (optionally) the disk have it."""

    label: str
    trail: Any = None
    events: Any = None
    disk: Any = None
    status: Status = "ok"
    note: str = ""


@dataclass
class Section:
    title: str
    items: list[Item] = field(default_factory=list)


@dataclass
class AuditReport:
    job_id: str
    sections: list[Section]

    @property
    def problems(self) -> list[str]:
        return [
            f"{section.title} · {item.label}: {item.status}" + (f" ({item.note})" if item.note else "")
            for section in self.sections
            for item in section.items
            if item.status in ("MISMATCH", "MISSING")
        ]

    @property
    def ok(self) -> bool:
        """Complete (every link present) and consistent (both witnesses agree everywhere)."""
        return not self.problems

    def verdict(self) -> str:
        """One line: complete and consistent, or how many problems in how many cross-checked values."""
        checked = sum(1 for s in self.sections for i in s.items if i.status != "info")
        if self.ok:
            return (
                f"complete and consistent: {checked} values agree between the audit trail and the event log"
            )
        return f"{len(self.problems)} problem(s) in {checked} cross-checked values"

    def to_markdown(self) -> str:
        lines = [f"# Audit report: job `{self.job_id}`", "", f"**Verdict: {self.verdict()}**", ""]
        lines += [f"- ⚠ {problem}" for problem in self.problems]
        for section in self.sections:
            lines += [
                "",
                f"## {section.title}",
                "",
                "| item | audit trail | Dagster event log | on disk | check |",
            ]
            lines.append("|---|---|---|---|---|")
            for item in section.items:
                cells = [item.label, *(_show(v) for v in (item.trail, item.events, item.disk))]
                status = item.status + (f": {item.note}" if item.note else "")
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in [*cells, status]) + " |")
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        out = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>Audit report: {html.escape(self.job_id)}</title><style>{_CSS}</style></head><body>",
            f"<h1>Audit report: job <code>{html.escape(self.job_id)}</code></h1>",
            f"<p class='{'ok' if self.ok else 'bad'}'><b>Verdict: {html.escape(self.verdict())}</b></p>",
        ]
        if self.problems:
            out.append("<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in self.problems) + "</ul>")
        for section in self.sections:
            out.append(f"<h2>{html.escape(section.title)}</h2><table><tr><th>item</th><th>audit trail</th>")
            out.append("<th>Dagster event log</th><th>on disk</th><th>check</th></tr>")
            for item in section.items:
                cells = "".join(
                    f"<td>{html.escape(_show(v))}</td>" for v in (item.trail, item.events, item.disk)
                )
                note = f": {item.note}" if item.note else ""
                out.append(
                    f"<tr class='{item.status.lower()}'><td>{html.escape(item.label)}</td>{cells}"
                    f"<td>{html.escape(item.status + note)}</td></tr>"
                )
            out.append("</table>")
        return "\n".join([*out, "</body></html>"]) + "\n"


_CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;font-family:monospace;font-size:12px;text-align:left}"
    "tr.mismatch,tr.missing{background:#fdd}.bad{color:#a00}.ok{color:#070}"
)


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool | str):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def compare(label: str, trail: Any, events: Any, disk: Any = None, *, note: str = "") -> Item:
    """Both witnesses must hold the value and agree (and agree with the disk, where it was recomputed)."""
    item = Item(label, trail, events, disk, note=note)
    if trail is None or events is None:
        item.status = "MISSING"
        item.note = note or ("not in the audit trail" if trail is None else "not in the event log")
    elif not _same(trail, events) or (disk is not None and not _same(trail, disk)):
        item.status = "MISMATCH"
    return item


def _tree(folder: str | None) -> dict[str, str] | None:
    """The folder's file hashes, less the registry's own MANIFEST.sha256; None where the folder is gone."""
    if not folder or not Path(folder).is_dir():
        return None
    return {name: digest for name, digest in sha256_tree(folder).items() if name != HASH_MANIFEST}


def _file_hashes(value: Any) -> Any:
    """{file: sha256} from the trail's dict or the event log's table rows ({"file": …, "sha256": …})."""
    if isinstance(value, list) and all(
        isinstance(row, dict) and {"file", "sha256"} <= row.keys() for row in value
    ):
        return {row["file"]: row["sha256"] for row in value}
    return value


def _files(label: str, trail: dict[str, str] | None, events: Any, folder: str | None) -> Item:
    """A folder's file hashes, shown as a count and one digest; the differing file names on a mismatch."""
    events = _file_hashes(events)
    disk = _tree(folder)
    item = compare(label, _digest(trail), _digest(events), _digest(disk))
    if item.status == "MISMATCH":
        names = {n for d in (trail, events, disk) if isinstance(d, dict) for n in d}
        differ = sorted(n for n in names if len({(d or {}).get(n) for d in (trail, events, disk) if d}) > 1)
        item.note = "differ: " + ", ".join(differ)
    return item


def _digest(files: Any) -> str | None:
    if not isinstance(files, dict):
        return None
    return f"{len(files)} files, sha256 {tree_digest(files)[:16]}…"


def _loss_table(markdown: Any) -> list[list[float]] | None:
    if not isinstance(markdown, str):
        return None
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*([-\d.e+naif]+)\s*\|$", markdown, flags=re.MULTILINE)
    return [[int(step), round(float(loss), 4)] for step, loss in rows]


def _names_in_table(markdown: Any) -> list[str] | None:
    if isinstance(markdown, list):  # the event log's table rows
        return [str(row.get("source")) for row in markdown if isinstance(row, dict)]
    if not isinstance(markdown, str):
        return None
    rows = [line for line in markdown.splitlines() if line.startswith("|")][2:]
    return [row.strip("|").split("|")[0].strip() for row in rows]


def _tree_sha(folder: str | None) -> str | None:
    tree = _tree(folder)
    return tree_digest(tree) if tree is not None else None


def _local_folder(uri: Any) -> str | None:
    parsed = urlparse(str(uri or ""))
    return unquote(parsed.path) if parsed.scheme == "file" else None


def read_trail(path: Path) -> tuple[list[dict[str, Any]], Item]:
    """The trail's records (as far as they parse) and an item saying whether its hash chain holds."""
    result = verify_audit_log(path)
    records: list[dict[str, Any]] = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    item = Item("hash chain", f"{result.records} records, head {result.head[:16]}…", note=result.reason)
    item.status = "ok" if result.ok else "MISMATCH"
    if not result.ok:
        item.note = f"line {result.first_bad_line}: {result.reason}"
    return records, item


def build_report(
    job_id: str,
    *,
    manifest: TrainingManifest | None,
    trail_path: Path,
    materializations: dict[str, dict[str, Any]],
    checks: dict[str, dict[str, Any]],
) -> AuditReport:
    """Cross-check a job's chain. `materializations`: asset name → {"run_id", "metadata"} of its latest
    materialization for this partition; `checks`: check name → {"passed", "metadata"} of its latest evaluation."""
    records, chain = read_trail(trail_path)
    by_hash = {r.get("sha256"): r for r in records}
    merge_only = manifest is not None and not manifest.merge.include_own_adapter
    expected = {**STAGE_EVENTS, **({"trained_adapter": Event.TRAINING_SKIPPED} if merge_only else {})}
    meta = {name: m.get("metadata", {}) for name, m in materializations.items()}
    trail: dict[str, dict[str, Any]] = {}
    links = Section("Audit trail and event log", [chain])
    cleanup: dict[str, Any] | None = None
    for asset, event in expected.items():
        head = meta.get(asset, {}).get("audit_head")
        record = by_hash.get(head)
        if record is not None and record.get("event") == Event.NODE_WEIGHTS_REMOVED:
            # the publish step's last record: the node cleanup, which names the `published` record it follows
            cleanup, record = record, by_hash.get(record.get("data", {}).get("after"))
        if asset not in materializations:
            links.items.append(Item(asset, status="MISSING", note="no materialization for this partition"))
        elif record is None:
            links.items.append(
                Item(asset, events=head, status="MISSING", note="audit_head not found in trail")
            )
        elif record.get("event") != event or record.get("job_id") != job_id:
            found = f"{record.get('event')} of {record.get('job_id')}"
            links.items.append(Item(asset, found, head, status="MISMATCH", note=f"expected {event}"))
        else:
            run = materializations[asset].get("run_id", "")
            then = (
                f" → #{cleanup['seq']} {Event.NODE_WEIGHTS_REMOVED}"
                if cleanup and asset == "published_artifact"
                else ""
            )
            links.items.append(
                Item(asset, f"#{record['seq']} {event}{then}", f"run {run[:8]} · head {head[:12]}…")
            )
            trail[asset] = {**record["data"], "_seq": record["seq"]}

    raw, curated, trained = (
        trail.get("raw_data", {}),
        trail.get("curated_dataset", {}),
        trail.get("trained_adapter", {}),
    )
    merged, exam, published = (
        trail.get("merged_model", {}),
        trail.get("exam_report", {}),
        trail.get("published_artifact", {}),
    )
    m_raw, m_cur, m_tr = (
        meta.get("raw_data", {}),
        meta.get("curated_dataset", {}),
        meta.get("trained_adapter", {}),
    )
    m_mer, m_ex, m_pub = (
        meta.get("merged_model", {}),
        meta.get("exam_report", {}),
        meta.get("published_artifact", {}),
    )

    registered_hash = sha256_text(manifest.canonical_json()) if manifest else None
    accepted = raw.get("manifest")
    accepted_hash = (
        sha256_text(json.dumps(accepted, sort_keys=True, separators=(",", ":"))) if accepted else None
    )
    snapshot = m_raw.get("snapshot")
    lot = raw.get("lot_number")
    published_dir = _local_folder(published.get("uri"))
    sections = [
        Section(
            "Manifest and lot",
            [
                compare(
                    "manifest sha256",
                    raw.get("manifest_sha256"),
                    m_raw.get("manifest_sha256"),
                    registered_hash,
                ),
                compare(
                    "manifest recorded in the trail, hashed", accepted_hash, m_raw.get("manifest_sha256")
                ),
                Item("method · base model", m_raw.get("method"), m_raw.get("base_model"), status="info"),
                compare(
                    "dataset sha256",
                    raw.get("dataset_sha256"),
                    m_raw.get("dataset_sha256"),
                    sha256_file(snapshot) if snapshot and Path(snapshot).is_file() else None,
                ),
                compare("lot number", lot, m_raw.get("lot_number")),
                *[
                    compare(f"lot number of {a}", lot, meta.get(a, {}).get("lot_number"))
                    for a in list(STAGE_EVENTS)[1:]
                ],
                compare(
                    f"lot number of check {GATE_CHECK}",
                    lot,
                    checks.get(GATE_CHECK, {}).get("metadata", {}).get("lot_number"),
                ),
            ],
        ),
        Section(
            "Curation",
            [
                *[
                    compare(k, curated.get(k), m_cur.get(k))
                    for k in ("rows_in", "kept", "removed", "train_rows", "test_rows")
                ],
                compare(
                    "train split sha256",
                    curated.get("train_sha256"),
                    m_cur.get("train_sha256"),
                    sha256_file(m_cur["train_path"])
                    if Path(str(m_cur.get("train_path"))).is_file()
                    else None,
                ),
                compare("test split sha256", curated.get("test_sha256"), m_cur.get("test_sha256")),
            ],
        ),
        Section("Training", _skipped_items(trained, m_tr))
        if merge_only
        else Section(
            "Training",
            [
                compare("backend", trained.get("backend"), m_tr.get("backend")),
                compare("device", trained.get("device"), m_tr.get("device")),
                compare("steps", trained.get("steps"), m_tr.get("steps")),
                compare(
                    "loss curve (step, loss)",
                    _trail_losses(records, trained.get("_seq")),
                    _loss_table(m_tr.get("loss_curve")),
                ),
                compare("final loss", trained.get("final_loss"), m_tr.get("final_loss")),
                _files("adapter files", trained.get("files"), m_tr.get("files"), m_tr.get("adapter_dir")),
            ],
        ),
        Section("Merge", _merge_items(job_id, merged, m_mer, trained.get("files"))),
        Section("Exam", _exam_items(exam, m_ex, checks.get(GATE_CHECK))),
        Section(
            "Publish",
            [
                compare("uri", published.get("uri"), m_pub.get("uri")),
                compare(
                    "tag",
                    published.get("tag"),
                    m_pub.get("tag"),
                    manifest.publish_target.tag if manifest else None,
                ),
                compare("status", published.get("status"), m_pub.get("status")),
                compare(
                    "artifact sha256",
                    published.get("artifact_sha256"),
                    m_pub.get("artifact_sha256"),
                    _tree_sha(published_dir),
                ),
                _files("published files", published.get("files"), m_pub.get("files"), published_dir),
                *_cleanup_items(cleanup),
            ],
        ),
    ]
    return AuditReport(job_id, [links, *sections])


def _skipped_items(trained: dict[str, Any], meta: dict[str, Any]) -> list[Item]:
    """A merge-only job trains nothing: both witnesses must say so; its merged model is its sources' adapters."""
    return [
        compare(
            "training skipped (merge-only job)",
            "skipped" if trained.get("reason") else None,
            "skipped" if meta.get("skipped") else None,
            note=str(trained.get("reason") or ""),
        )
    ]


def _cleanup_items(cleanup: dict[str, Any] | None) -> list[Item]:
    """The node cleanup after the publish, for information (the weights' hashes above are not re-computed then)."""
    if cleanup is None:
        return []
    data = cleanup.get("data", {})
    folders = ", ".join(sorted(data.get("folders") or {})) or "none"
    return [
        Item(
            "weights removed from the node",
            f"#{cleanup.get('seq')}: {folders} ({data.get('bytes_freed', 0)} bytes)",
            status="info",
            note="adapter and merged model files are hashed from the trail and event log only",
        )
    ]


def _trail_losses(records: list[dict[str, Any]], saved_seq: int | None) -> list[list[float]] | None:
    """The training_loss records of the training that ended at record `saved_seq` (after its preflight)."""
    if saved_seq is None:
        return None
    losses: list[list[float]] = []
    for record in records[: saved_seq - 1]:
        if record.get("event") == Event.PREFLIGHT_PASSED:
            losses = []
        elif record.get("event") == Event.TRAINING_LOSS:
            losses.append([int(record["data"]["step"]), round(float(record["data"]["loss"]), 4)])
    return losses


def _merge_items(job_id: str, merged: dict[str, Any], meta: dict[str, Any], adapter_files: Any) -> list[Item]:
    sources = merged.get("sources") or []
    items = [
        compare("method", merged.get("method"), meta.get("method")),
        compare("sources", [s.get("name") for s in sources] or None, _names_in_table(meta.get("sources"))),
        _files("merged model files", merged.get("files"), meta.get("files"), meta.get("model_dir")),
    ]
    for source in sources:
        label = (
            f"source {source.get('name')} (weight {source.get('weight')}, density {source.get('density')})"
        )
        if source.get("name") == job_id:  # this job's own adapter: its hashes must be those training saved
            items.append(
                compare(label + " = trained adapter", _digest(source.get("sha256")), _digest(adapter_files))
            )
        else:
            items.append(
                Item(label, _digest(source.get("sha256")), status="info", note=str(source.get("path")))
            )
    return items


def _exam_items(exam: dict[str, Any], meta: dict[str, Any], check: dict[str, Any] | None) -> list[Item]:
    check = check or {}
    numbers = check.get("metadata", {})
    items = [
        compare("passed", exam.get("passed"), meta.get("passed")),
        compare(f"check {GATE_CHECK} passed", exam.get("passed"), check.get("passed")),
        compare("reasons", exam.get("reasons"), meta.get("reasons")),
    ]
    for row in (exam.get("report") or {}).get("metrics", []):
        for side in ("baseline", "candidate"):
            if row.get(side) is not None:
                key = f"{row['name']}_{side}"
                items.append(compare(f"{key} (required {row.get('required')})", row[side], numbers.get(key)))
    if not exam.get("report"):
        items.append(Item("metrics", status="MISSING", note="no exam verdict in the audit trail"))
    return items
