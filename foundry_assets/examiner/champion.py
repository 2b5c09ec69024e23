"""The champion: the current release of this model line (`exam.champion`), fetched from its registry and verified
before the exam scores it beside the base model and the candidate.

A `job` champion is that job's latest `published` record: its tag is fetched from the registry the record names and
the tag's MANIFEST.sha256 must equal the record's file hashes (as merge sources are checked). A `tag` champion (registry
default: this job's) is checked against its own MANIFEST.sha256. Either way every file is hashed before it is placed,
the whole tag is fetched (its `exam_report.json` names the lot), and its weights are an adapter (scored on this job's
base model) or a model folder. A champion that cannot be fetched or verified is an ExamError naming it: the exam never
runs without the champion it was told to beat.
"""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event, latest
from foundry_assets.errors import ExamError, FoundryError
from foundry_assets.manifest import ChampionConfig, TrainingManifest
from foundry_assets.publisher.base import EXAM_REPORT_FILE, weights_of
from foundry_assets.publisher.fetch import FetchResult
from foundry_assets.workspace import Workspace

Fetcher = Callable[..., FetchResult]
"""`publisher.fetch_artifact`'s shape: (registry, tag, dest, *, expected=…) → FetchResult (the Dagster layer passes its
publisher resource's, which holds the S3 client)."""


@dataclass(frozen=True)
class Champion:
    """The fetched, verified champion: where its weights are, whether they are an adapter, and what names it."""

    model_dir: Path
    adapter: bool
    tag: str
    uri: str
    lot_number: str
    job_id: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    """The tag's MANIFEST.sha256 as fetched and verified ({path in the tag: SHA256})."""

    @property
    def label(self) -> str:
        """How reasons and reports name it: the job or tag, and the lot."""
        lot = f"lot {self.lot_number[:12]}…" if self.lot_number else "lot unknown"
        if self.job_id:
            return f"champion job {self.job_id!r} (tag {self.tag!r}, {lot})"
        return f"champion tag {self.tag!r} at {self.uri} ({lot})"

    def to_metadata(self) -> dict[str, Any]:
        """The champion as the exam report, the `exam_verdict` record and the card name it."""
        return {
            "label": self.label,
            "job_id": self.job_id,
            "tag": self.tag,
            "uri": self.uri,
            "lot_number": self.lot_number,
            "artifact": "adapter" if self.adapter else "merged_model",
            "files": dict(sorted(self.files.items())),
        }


def resolve_champion(
    manifest: TrainingManifest,
    workspace: Workspace,
    *,
    trail_for: Callable[[str], AuditTrail],
    fetch: Fetcher,
) -> Champion | None:
    """The manifest's champion fetched into `workspace.champion_dir` and verified; None when none is named.

    Raises ExamError naming the champion when it is not published, cannot be fetched, differs from its record, or is
    an adapter of another base model.
    """
    config = manifest.exam.champion
    if config is None:
        return None
    dest = workspace.champion_dir(manifest.job_id)
    shutil.rmtree(dest, ignore_errors=True)  # a leftover of an earlier exam is never scored
    try:
        champion = _fetched(config, manifest, dest, trail_for=trail_for, fetch=fetch)
        if champion.adapter:
            _check_base(champion, manifest)
    except ExamError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return champion


def _fetched(
    config: ChampionConfig,
    manifest: TrainingManifest,
    dest: Path,
    *,
    trail_for: Callable[[str], AuditTrail],
    fetch: Fetcher,
) -> Champion:
    """Fetch the champion's whole tag into `dest`, checked against the `published` record (job) or the tag's listing."""
    if config.job is not None:
        what = f"exam.champion job {config.job!r}"
        published = _latest_published(what, config.job, trail_for)
        registry, tag = str(published.get("registry") or ""), str(published.get("tag") or "")
        expected: dict[str, str] | None = dict(published.get("files") or {})
        lot = str(published.get("lot_number") or "")
        if not registry or not tag or not expected:
            raise ExamError(
                f"{what}: its `published` record names no registry, tag or files; publish it again"
            )
    else:
        tag, registry = str(config.tag), config.registry or manifest.publish_target.registry
        what, expected, lot = f"exam.champion tag {tag!r} in {registry}", None, ""
    try:
        fetched = fetch(registry, tag, dest, expected=expected)
    except FoundryError as e:
        raise ExamError(f"{what} could not be fetched and verified: {e}") from e
    if config.job is not None and published.get("uri") and fetched.uri != published["uri"]:
        raise ExamError(
            f"{what} was published to {published['uri']}, but its registry now names {fetched.uri}"
        )
    prefix, weights = weights_of(fetched.listing)
    report = _tag_exam_report(dest)
    if lot and report.get("lot_number") not in (None, lot):
        raise ExamError(f"{what}: the tag's {EXAM_REPORT_FILE} is of lot {report['lot_number']}, not {lot}")
    return Champion(
        model_dir=dest / prefix if prefix else dest,
        adapter="adapter_config.json" in weights,
        tag=tag,
        uri=fetched.uri,
        lot_number=lot or str(report.get("lot_number") or ""),
        job_id=config.job,
        files=dict(fetched.listing),
    )


def _latest_published(what: str, job_id: str, trail_for: Callable[[str], AuditTrail]) -> dict[str, Any]:
    """The data of the job's latest `published` record, from its hash-checked audit trail."""
    trail = trail_for(job_id)
    if not trail.path.is_file():
        raise ExamError(
            f"{what} is unknown: it has no audit trail at {trail.path}; fix the job id or name a tag"
        )
    try:
        records = trail.records()
    except FoundryError as e:
        raise ExamError(f"{what}: its audit trail cannot be trusted: {e}") from e
    published = latest(records, Event.PUBLISHED)
    if published is None:
        raise ExamError(
            f"{what} has no release: no {Event.PUBLISHED} record in {trail.path}; publish that job first, or name a "
            "published tag (exam.champion.tag)"
        )
    return dict(published["data"])


def _tag_exam_report(dest: Path) -> dict[str, Any]:
    """The tag's exam report (it names the champion's lot); empty when the tag holds none."""
    path = dest / EXAM_REPORT_FILE
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _check_base(champion: Champion, manifest: TrainingManifest) -> None:
    """An adapter champion is scored on this job's base model, so it must be an adapter of that base (the name the
    crucible writes, or, in an older adapter, this job's model folder)."""
    try:
        config = json.loads((champion.model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExamError(f"{champion.label}: its adapter_config.json cannot be read: {e}") from e
    claimed = str(config.get("base_model_name_or_path") or "")
    local = manifest.model_path or manifest.base_model
    if not claimed or claimed == manifest.base_model:
        return
    if Path(claimed).is_absolute() and Path(claimed).resolve() == Path(local).expanduser().resolve():
        return
    raise ExamError(
        f"{champion.label} is an adapter of {claimed!r}, but this job's base_model is {manifest.base_model!r}; "
        "a champion must be of the same base (the same line)"
    )
