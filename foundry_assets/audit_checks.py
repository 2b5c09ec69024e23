"""The auditor's cross-checks, one section of the report per stage: each value as the audit trail, the Dagster event
log and (where the file is still on disk) a fresh hash have it, compared.

`audit_report.build_report` links each asset's `audit_head` to its trail record and hands both witnesses here as a
`Witnesses`; every section reads structured values only (table rows, record data), never rendered markdown.
"""

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from foundry_assets.audit_events import STAGE_EVENTS, Event, Record
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


@dataclass(frozen=True)
class Witnesses:
    """A job's chain as both witnesses hold it, each asset's trail record already linked through its audit_head."""

    job_id: str
    manifest: TrainingManifest | None
    records: list[Record]
    trail: dict[str, dict[str, Any]]
    """asset → the data of the record its audit_head points at, with that record's `_seq`."""
    meta: dict[str, dict[str, Any]]
    """asset → its latest materialization's metadata for the job's partition."""
    checks: dict[str, dict[str, Any]]
    """check → {"passed", "metadata"} of its latest evaluation for the partition."""
    cleanup: Record | None = None
    """The node cleanup record that followed the publish, if any."""

    @property
    def merge_only(self) -> bool:
        return self.manifest is not None and not self.manifest.merge.include_own_adapter


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


def _rows(value: Any, *columns: str) -> list[dict[str, Any]] | None:
    """A table's rows as the event log holds them ({column: value} dicts with these columns), or None."""
    if isinstance(value, list) and all(isinstance(row, dict) and set(columns) <= row.keys() for row in value):
        return value
    return None


def _file_hashes(value: Any) -> Any:
    """{file: sha256} from the trail's dict or the event log's table rows ({"file": …, "sha256": …})."""
    rows = _rows(value, "file", "sha256")
    return {row["file"]: row["sha256"] for row in rows} if rows is not None else value


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


def _tree_sha(folder: str | None) -> str | None:
    tree = _tree(folder)
    return tree_digest(tree) if tree is not None else None


def _local_folder(uri: Any) -> str | None:
    parsed = urlparse(str(uri or ""))
    return unquote(parsed.path) if parsed.scheme == "file" else None


def manifest_section(w: Witnesses) -> Section:
    """The registered manifest, the one the trail accepted, the data snapshot, and the lot every stage carries."""
    raw, meta = w.trail.get("raw_data", {}), w.meta.get("raw_data", {})
    registered_hash = sha256_text(w.manifest.canonical_json()) if w.manifest else None
    accepted = raw.get("manifest")
    accepted_hash = (
        sha256_text(json.dumps(accepted, sort_keys=True, separators=(",", ":"))) if accepted else None
    )
    snapshot, lot = meta.get("snapshot"), raw.get("lot_number")
    return Section(
        "Manifest and lot",
        [
            compare(
                "manifest sha256", raw.get("manifest_sha256"), meta.get("manifest_sha256"), registered_hash
            ),
            compare("manifest recorded in the trail, hashed", accepted_hash, meta.get("manifest_sha256")),
            Item("method · base model", meta.get("method"), meta.get("base_model"), status="info"),
            compare(
                "dataset sha256",
                raw.get("dataset_sha256"),
                meta.get("dataset_sha256"),
                sha256_file(snapshot) if snapshot and Path(snapshot).is_file() else None,
            ),
            compare("lot number", lot, meta.get("lot_number")),
            *[
                compare(f"lot number of {a}", lot, w.meta.get(a, {}).get("lot_number"))
                for a in list(STAGE_EVENTS)[1:]
            ],
            compare(
                f"lot number of check {GATE_CHECK}",
                lot,
                w.checks.get(GATE_CHECK, {}).get("metadata", {}).get("lot_number"),
            ),
        ],
    )


def curation_section(w: Witnesses) -> Section:
    curated, meta = w.trail.get("curated_dataset", {}), w.meta.get("curated_dataset", {})
    train_path = Path(str(meta.get("train_path")))
    return Section(
        "Curation",
        [
            *[
                compare(k, curated.get(k), meta.get(k))
                for k in ("rows_in", "kept", "removed", "train_rows", "test_rows")
            ],
            compare(
                "train split sha256",
                curated.get("train_sha256"),
                meta.get("train_sha256"),
                sha256_file(meta["train_path"]) if train_path.is_file() else None,
            ),
            compare("test split sha256", curated.get("test_sha256"), meta.get("test_sha256")),
        ],
    )


def training_section(w: Witnesses) -> Section:
    """The training's numbers and loss curve (the trail's training_loss records against the `losses` table rows);
    a merge-only job trains nothing, and both witnesses must say so."""
    trained, meta = w.trail.get("trained_adapter", {}), w.meta.get("trained_adapter", {})
    if w.merge_only:
        skipped = compare(
            "training skipped (merge-only job)",
            "skipped" if trained.get("reason") else None,
            "skipped" if meta.get("skipped") else None,
            note=str(trained.get("reason") or ""),
        )
        return Section("Training", [skipped])
    return Section(
        "Training",
        [
            compare("backend", trained.get("backend"), meta.get("backend")),
            compare("device", trained.get("device"), meta.get("device")),
            compare("steps", trained.get("steps"), meta.get("steps")),
            compare(
                "loss curve (step, loss)",
                _trail_losses(w.records, trained.get("_seq")),
                _table_losses(meta.get("losses")),
            ),
            compare("final loss", trained.get("final_loss"), meta.get("final_loss")),
            _files("adapter files", trained.get("files"), meta.get("files"), meta.get("adapter_dir")),
        ],
    )


def _trail_losses(records: list[Record], saved_seq: int | None) -> list[list[float]] | None:
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


def _table_losses(value: Any) -> list[list[float]] | None:
    """The trained_adapter's `losses` table rows ({step, loss}) as [step, loss] pairs."""
    rows = _rows(value, "step", "loss")
    if rows is None:
        return None
    return [[int(row["step"]), round(float(row["loss"]), 4)] for row in rows]


def merge_section(w: Witnesses) -> Section:
    """The merge's method, its sources (the trail's list against the `sources` table rows) and files; this job's own
    adapter among the sources must hash as training saved it."""
    merged, meta = w.trail.get("merged_model", {}), w.meta.get("merged_model", {})
    adapter_files = w.trail.get("trained_adapter", {}).get("files")
    sources = merged.get("sources") or []
    rows = meta.get("sources")  # the `sources` table's rows, each {"source": …, "weight": …, …}
    named = (
        [str(row.get("source")) for row in rows if isinstance(row, dict)] if isinstance(rows, list) else None
    )
    items = [
        compare("method", merged.get("method"), meta.get("method")),
        compare("sources", [s.get("name") for s in sources] or None, named),
        _files("merged model files", merged.get("files"), meta.get("files"), meta.get("model_dir")),
    ]
    for source in sources:
        label = (
            f"source {source.get('name')} (weight {source.get('weight')}, density {source.get('density')})"
        )
        if source.get("name") == w.job_id:  # this job's own adapter: its hashes must be those training saved
            items.append(
                compare(label + " = trained adapter", _digest(source.get("sha256")), _digest(adapter_files))
            )
        else:
            items.append(
                Item(label, _digest(source.get("sha256")), status="info", note=str(source.get("path")))
            )
    return Section("Merge", items)


def exam_section(w: Witnesses) -> Section:
    """The verdict, the gate check's verdict, and each metric against the check's numbers."""
    exam, meta = w.trail.get("exam_report", {}), w.meta.get("exam_report", {})
    check = w.checks.get(GATE_CHECK) or {}
    numbers = check.get("metadata", {})
    items = [
        compare("passed", exam.get("passed"), meta.get("passed")),
        compare(f"check {GATE_CHECK} passed", exam.get("passed"), check.get("passed")),
        compare("reasons", exam.get("reasons"), meta.get("reasons")),
    ]
    champion = exam.get("champion")
    if champion:  # the release it also had to beat, named alike by the trail and the materialization
        items.append(compare("champion", champion.get("label"), meta.get("champion")))
    for row in (exam.get("report") or {}).get("metrics", []):
        for side in ("baseline", "champion", "candidate"):  # the champion's only when the exam named one
            if row.get(side) is not None:
                key = f"{row['name']}_{side}"
                items.append(compare(f"{key} (required {row.get('required')})", row[side], numbers.get(key)))
        for job_id, value in (
            row.get("sources") or {}
        ).items():  # each merge source's, when the exam had them
            if value is not None:
                key = f"{row['name']}_source_{job_id}"
                items.append(compare(key, value, numbers.get(key)))
    if not exam.get("report"):
        items.append(Item("metrics", status="MISSING", note="no exam verdict in the audit trail"))
    return Section("Exam", items)


def publish_section(w: Witnesses) -> Section:
    """Where the artifact went and what it holds (re-hashed where the registry is a local folder), then the node
    cleanup, for information."""
    published, meta = w.trail.get("published_artifact", {}), w.meta.get("published_artifact", {})
    published_dir = _local_folder(published.get("uri"))
    tag = w.manifest.publish_target.tag if w.manifest else None
    return Section(
        "Publish",
        [
            compare("uri", published.get("uri"), meta.get("uri")),
            compare("tag", published.get("tag"), meta.get("tag"), tag),
            compare("status", published.get("status"), meta.get("status")),
            compare(
                "artifact sha256",
                published.get("artifact_sha256"),
                meta.get("artifact_sha256"),
                _tree_sha(published_dir),
            ),
            _files("published files", published.get("files"), meta.get("files"), published_dir),
            *_cleanup_items(w.cleanup),
        ],
    )


def _cleanup_items(cleanup: Record | None) -> list[Item]:
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


STAGE_SECTIONS: tuple[Callable[[Witnesses], Section], ...] = (
    manifest_section,
    curation_section,
    training_section,
    merge_section,
    exam_section,
    publish_section,
)
"""The report's sections after the links, in lineage order."""
