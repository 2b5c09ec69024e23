"""The auditor's report: a job's whole chain, each link read from the audit trail AND the Dagster event log.

Every value is taken from both witnesses (and, where the file is still on disk, recomputed) and compared: the audit
trail record that each asset's `audit_head` points at, against that asset's latest materialization metadata for the
job's partition. Any disagreement, a missing link or a broken hash chain makes the report fail. No Dagster in here:
the event log arrives as plain dicts (`defs/event_log.py` reads them from an instance). This module links the
witnesses and renders the report; `audit_checks.py` holds each stage's cross-checks.
"""

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.actor import describe
from foundry_assets.audit import verify_audit_log
from foundry_assets.audit_checks import STAGE_SECTIONS, Item, Section, Status, Witnesses
from foundry_assets.audit_events import STAGE_EVENTS, Event, Record, latest
from foundry_assets.hashing import sha256_file
from foundry_assets.manifest import TrainingManifest


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


def read_trail(path: Path) -> tuple[list[Record], Item]:
    """The trail's records (as far as they parse) and an item saying whether its hash chain holds."""
    result = verify_audit_log(path)
    records: list[Record] = []
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


def trail_section(records: list[Record], trail_path: Path) -> Section:
    """What the trail says on its own: each torn write it fenced (shown plainly, its evidence re-hashed), and the gate
    re-derived for each `published` record. A sidecar that no record names (a repair cut off between moving the torn
    bytes aside and writing its record) is shown too."""
    repairs = [r for r in records if r.get("event") == Event.TRAIL_REPAIRED]
    items = [_repair(r, trail_path) for r in repairs] or [Item("torn writes fenced", "none", status="info")]
    named = {str((r.get("data") or {}).get("sidecar")) for r in repairs}
    items += [
        Item(f"torn bytes in {p.name}", status="info", note="no trail_repaired record names this file")
        for p in sorted(trail_path.parent.glob(f"{trail_path.name}.torn-*"))
        if p.name not in named
    ]
    items += [_gated(r, records) for r in records if r.get("event") == Event.PUBLISHED]
    return Section("The audit trail on its own", items)


def actors_section(records: list[Record]) -> Section:
    """Who did what, when and why: each record's actor (kind, name, run) and a person's reason, in trail order. A run
    of records alike but for their data (the training's loss every 10 steps) is one row. A record written before
    actors were recorded says so."""
    items: list[Item] = []
    rows: list[tuple[tuple[Any, ...], list[Record]]] = []
    for record in records:
        key = (record.get("event"), describe(record.get("actor")), record.get("reason"))
        if rows and rows[-1][0] == key:
            rows[-1][1].append(record)
        else:
            rows.append((key, [record]))
    for (event, actor, reason), group in rows:
        first, last = group[0], group[-1]
        seqs = f"#{first.get('seq')}" + (f"–#{last.get('seq')}" if len(group) > 1 else "")
        when = str(first.get("ts", ""))[:19].replace("T", " ") + " UTC"
        count = f" ×{len(group)}" if len(group) > 1 else ""
        note = f"why: {reason}" if reason else ""
        items.append(Item(f"{seqs} {event}{count}", f"{when} · {actor}", status="info", note=note))
    return Section("Who did what (every record's actor and reason)", items)


SignatureCheck = Callable[[Record], str | None]
"""Verifies one `release_signed` record against the job's current release: None when it counts, else the reason
(`release.signature.verify_signature`, bound by the caller to the trusted signers; this module stays free of keys)."""
TAMPERING = ("malformed", "forged", "wrong name", "unknown signer")
"""Refusals that are evidence against the record itself; the others (another lot, exam or artifact, a key outside its
period) say the signature does not count for the current release."""


def signatures_section(records: list[Record], check: SignatureCheck | None) -> Section:
    """Every electronic signature: printed name, UTC time, meaning, the signer's reason, the lot it signs, and its
    verification. A forged or unknown-signer signature is a problem of the chain; a signature of an earlier release is
    shown as not counting, with its reason."""
    signed = [r for r in records if r.get("event") == Event.RELEASE_SIGNED]
    items = [] if signed else [Item("signatures", "none", status="info")]
    for record in signed:
        m = (record.get("data") or {}).get("manifestation") or {}
        reason = check(record) if check else "not verified (no trusted-signers file was read)"
        lot = str(m.get("lot_number") or "")[:12]
        value = (
            f"{m.get('printed_name')} · {str(m.get('signed_at', ''))[:19].replace('T', ' ')} UTC · lot {lot}…"
        )
        status: Status = "ok" if reason is None else "MISMATCH" if reason.startswith(TAMPERING) else "info"
        verdict = "verified" if reason is None else f"does not count: {reason}"
        items.append(
            Item(
                f"#{record.get('seq')} {m.get('meaning')}",
                value,
                status=status,
                note=f"why: {m.get('reason')}; {verdict}",
            )
        )
    return Section("Electronic signatures (printed name, UTC time, meaning, reason, verification)", items)


def _repair(record: Record, trail_path: Path) -> Item:
    """A `trail_repaired` record: the torn bytes' size and hash against the sidecar file that keeps them."""
    data = record.get("data") or {}
    sidecar = trail_path.parent / Path(str(data.get("sidecar"))).name  # never read outside the trail's folder
    digest = sha256_file(sidecar) if sidecar.is_file() else None
    item = Item(
        f"torn write fenced at #{record.get('seq')}",
        f"{data.get('torn_bytes')} bytes, sha256 {str(data.get('torn_sha256'))[:16]}…",
        disk=f"sha256 {digest[:16]}…" if digest else None,
        status="info",
        note=f"a write was cut off here (a full disk?); its bytes are kept in {sidecar.name}",
    )
    if digest is None:
        item.status, item.note = "MISSING", f"{sidecar.name}, which kept the torn bytes, is gone"
    elif digest != data.get("torn_sha256"):
        item.status, item.note = "MISMATCH", f"{sidecar.name} no longer holds the torn bytes"
    return item


def _gated(published: Record, records: list[Record]) -> Item:
    """The latest `exam_verdict` of the published lot before the `published` record must have passed. Publishing
    checks this too; a publish that got past it (e.g. a tampered stored exam result) is a finding here."""
    seq, lot = published.get("seq"), str((published.get("data") or {}).get("lot_number") or "")
    label = f"published #{seq} follows a passed exam of its lot"
    of_lot = [r for r in records if str((r.get("data") or {}).get("lot_number") or "") == lot]
    verdict = latest(of_lot, Event.EXAM_VERDICT, before=seq) if lot and seq else None
    if verdict is None:
        what = f"no exam_verdict of lot {lot[:12]}… before it" if lot else "the record names no lot_number"
        return Item(label, status="MISSING", note=what)
    passed = verdict["data"].get("passed") is True
    trail = f"exam_verdict #{verdict['seq']} of lot {lot[:12]}… {'passed' if passed else 'failed'}"
    note = (
        "" if passed else f"the latest exam_verdict of lot {lot[:12]}… before it (#{verdict['seq']}) failed"
    )
    return Item(label, trail, status="ok" if passed else "MISMATCH", note=note)


def build_report(
    job_id: str,
    *,
    manifest: TrainingManifest | None,
    trail_path: Path,
    materializations: dict[str, dict[str, Any]],
    checks: dict[str, dict[str, Any]],
    check_signature: SignatureCheck | None = None,
) -> AuditReport:
    """Cross-check a job's chain. `materializations`: asset name → {"run_id", "metadata"} of its latest
    materialization for this partition; `checks`: check name → {"passed", "metadata"} of its latest evaluation."""
    records, chain = read_trail(trail_path)
    links = Section("Audit trail and event log", [chain])
    merge_only = manifest is not None and not manifest.merge.include_own_adapter
    expected = {**STAGE_EVENTS, **({"trained_adapter": Event.TRAINING_SKIPPED} if merge_only else {})}
    by_hash = {r.get("sha256"): r for r in records}
    trail: dict[str, dict[str, Any]] = {}
    cleanup: Record | None = None
    for asset, event in expected.items():
        materialization = materializations.get(asset)
        head = (materialization or {}).get("metadata", {}).get("audit_head")
        record = by_hash.get(head)
        if record is not None and record.get("event") == Event.NODE_WEIGHTS_REMOVED:
            # the publish step's last record: the node cleanup, which names the `published` record it follows
            cleanup, record = record, by_hash.get(record.get("data", {}).get("after"))
        link = _link(job_id, asset, event, materialization, head, record, cleanup)
        links.items.append(link)
        if link.status == "ok" and record is not None:
            trail[asset] = {**record["data"], "_seq": record["seq"]}
    meta = {name: m.get("metadata", {}) for name, m in materializations.items()}
    witnesses = Witnesses(job_id, manifest, records, trail, meta, checks, cleanup)
    sections = [
        links,
        trail_section(records, trail_path),
        *(section(witnesses) for section in STAGE_SECTIONS),
        signatures_section(records, check_signature),
        actors_section(records),
    ]
    return AuditReport(job_id, sections)


def _link(
    job_id: str,
    asset: str,
    event: Event,
    materialization: dict[str, Any] | None,
    head: Any,
    record: Record | None,
    cleanup: Record | None,
) -> Item:
    """Whether the asset's latest materialization points (by audit_head) at the trail record its stage writes."""
    if materialization is None:
        return Item(asset, status="MISSING", note="no materialization for this partition")
    if record is None:
        return Item(asset, events=head, status="MISSING", note="audit_head not found in trail")
    if record.get("event") != event or record.get("job_id") != job_id:
        found = f"{record.get('event')} of {record.get('job_id')}"
        return Item(asset, found, head, status="MISMATCH", note=f"expected {event}")
    run = materialization.get("run_id", "")
    then = (
        f" → #{cleanup['seq']} {Event.NODE_WEIGHTS_REMOVED}"
        if cleanup and asset == "published_artifact"
        else ""
    )
    return Item(asset, f"#{record['seq']} {event}{then}", f"run {run[:8]} · head {head[:12]}…")
