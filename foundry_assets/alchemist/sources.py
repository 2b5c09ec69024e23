"""Merge sources that are other foundry jobs, checked from the foundry's own records and fetched from their registry.

What is known about a source job is read with no Dagster involved: its registered manifest (base model), its
hash-chained audit trail (the latest `adapter_saved` record with the adapter's file hashes, the lot of the run that
trained it, the latest `exam_verdict` after it, and the `published` record after a passing verdict). The adapter itself
is not read from the source job's folder (its weights leave the node once published) but fetched from the registry it
was published to, into this job's `sources/<job>/` folder, every file checked against the tag's MANIFEST.sha256, the
`published` record and the `adapter_saved` record. `resolve_job_sources` refuses a source that does not exist, was
trained on another base, is itself a merge job, has no exam, failed its latest exam, was never published, published
something other than its adapter, or whose registry copy is not the adapter it trained and examined.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from foundry_assets.alchemist.refs import AdapterRef, read_json
from foundry_assets.audit import AuditTrail
from foundry_assets.audit_events import Event, Record, after, latest
from foundry_assets.errors import FoundryError, MergeError
from foundry_assets.hashing import sha256_tree
from foundry_assets.manifest import TrainingManifest
from foundry_assets.publisher import FetchResult, fetch_artifact
from foundry_assets.publisher.base import weights_of
from foundry_assets.workspace import Workspace

ADAPTER = "adapter"
"""The `artifact` a source job must have published (its `published` record's kind)."""


class ArtifactFetcher(Protocol):
    """Fetches a published tag's weights into `dest`, checked by SHA256 (`publisher.fetch_artifact`'s shape)."""

    def __call__(
        self,
        registry: str,
        tag: str,
        dest: Path,
        *,
        weights: bool = False,
        expected: dict[str, str] | None = None,
    ) -> FetchResult: ...


@dataclass(frozen=True)
class JobSource:
    """Another job's examined adapter, ready to merge: where it is, what it hashes to, and its lot number."""

    job_id: str
    adapter_dir: Path
    weight: float
    density: float
    lot_number: str
    adapter_files: dict[str, str]
    exam: dict[str, Any]
    train_path: Path | None = None
    published_uri: str = ""
    """The registry tag the adapter was fetched from (`adapter_dir` is this job's local copy of it)."""

    def ref(self) -> AdapterRef:
        return AdapterRef(self.adapter_dir, self.weight, self.density, self.job_id)

    def to_metadata(self) -> dict[str, Any]:
        """The lineage record of this source (merged_model metadata and the audit trail)."""
        return {
            "job_id": self.job_id,
            "lot_number": self.lot_number,
            "published_uri": self.published_uri,
            "adapter_dir": str(self.adapter_dir),
            "adapter_sha256": dict(sorted(self.adapter_files.items())),
            "weight": self.weight,
            "density": self.density,
            "exam": self.exam,
        }


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _source_manifest(
    what: str, job_id: str, manifest: TrainingManifest, workspace: Workspace
) -> TrainingManifest:
    """The source job's registered manifest: another job, not a merge job, trained on this job's base."""
    if job_id == manifest.job_id:
        raise MergeError(f"{what} is this job itself; a job cannot merge its own adapter as a source")
    if not workspace.manifest_path(job_id).is_file():
        raise MergeError(
            f"{what} does not exist: no manifest is registered at {workspace.manifest_path(job_id)}; "
            "run that job first or fix the job id"
        )
    try:
        theirs = workspace.load(job_id)
    except FoundryError as e:
        raise MergeError(f"{what}: its registered manifest cannot be read: {e}") from e
    if theirs.merge.sources:
        raise MergeError(
            f"{what} is itself a merge job (it names {len(theirs.merge.sources)} sources); its trained adapter is "
            "not what its exam judged. Name its source jobs here directly instead"
        )
    ours_base = (manifest.base_model, manifest.model_path or manifest.base_model)
    their_base = (theirs.base_model, theirs.model_path or theirs.base_model)
    if ours_base[0] != their_base[0] or not _same_path(ours_base[1], their_base[1]):
        raise MergeError(
            f"{what} was trained on another base: base_model={their_base[0]!r}, model_path={their_base[1]!r}; "
            f"this job's is base_model={ours_base[0]!r}, model_path={ours_base[1]!r}"
        )
    return theirs


@dataclass(frozen=True)
class _Examined:
    """A source's audit records, its latest `adapter_saved` record, that adapter's lot, and the passing verdict."""

    records: list[Record]
    saved: Record
    lot: str
    verdict: Record


def _examined_adapter(what: str, trail: AuditTrail, recorded_lot: str | None) -> _Examined:
    """The source's latest adapter and the latest exam after it, which must have passed and judged that lot."""
    try:
        records = trail.records()
    except FoundryError as e:
        raise MergeError(f"{what}: its audit trail cannot be trusted: {e}") from e
    saved = latest(records, Event.ADAPTER_SAVED)
    if saved is None:
        raise MergeError(
            f"{what} has no trained adapter (no {Event.ADAPTER_SAVED} record in {trail.path}); run it first"
        )
    accepted = latest(records, Event.JOB_ACCEPTED, before=saved["seq"])
    lot = str((accepted or {}).get("data", {}).get("lot_number") or "")
    verdicts = after(records, Event.EXAM_VERDICT, saved["seq"])
    if not verdicts:
        raise MergeError(
            f"{what}: its latest adapter (lot {lot[:12]}…) has not been examined; run its exam first"
        )
    verdict = verdicts[-1]["data"]
    if not verdict.get("passed"):
        reasons = "; ".join(verdict.get("reasons") or []) or "no reason recorded"
        raise MergeError(f"{what} failed its latest exam (lot {lot[:12]}…): {reasons}")
    if verdict.get("lot_number") and verdict["lot_number"] != lot:
        raise MergeError(
            f"{what}: its latest exam judged lot {verdict['lot_number']}, not its adapter's lot {lot}"
        )
    if recorded_lot is not None and recorded_lot != lot:
        raise MergeError(
            f"{what}: the latest trained_adapter materialization is lot {recorded_lot}, but its audit trail's latest "
            f"adapter is lot {lot}; re-run the job so both agree"
        )
    return _Examined(records, saved, lot, verdicts[-1])


def _fetch_verified(
    what: str,
    fetch: ArtifactFetcher,
    published: dict[str, Any],
    *,
    registry: str,
    dest: Path,
    expected: dict[str, str],
    manifest: TrainingManifest,
) -> dict[str, str]:
    """Fetch the published adapter into `dest` and check it is the one trained and examined, for this base.

    The adapter sits at the tag's root (or, in a tag published before that layout, in its `adapter/` folder).
    Returns the fetched files' SHA256 (equal to `expected`, the `adapter_saved` record's hashes).
    """
    uri = str(published.get("uri") or "")
    try:
        fetched = fetch(
            registry,
            str(published["tag"]),
            dest,
            weights=True,
            expected=dict(published.get("files") or {}),
        )
    except FoundryError as e:
        raise MergeError(f"{what}: its published adapter could not be fetched from {uri}: {e}") from e
    try:
        if uri and fetched.uri != uri:
            raise MergeError(
                f"{what}: it was published to {uri}, but its registry {registry!r} now names {fetched.uri}; "
                "fix the source job's registry or publish it again"
            )
        found = sha256_tree(dest)
        if found != expected:
            changed = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
            raise MergeError(
                f"{what}: the adapter fetched from {uri} is not the one that was trained and examined "
                f"(files differ: {changed}); re-run and publish that job"
            )
        _check_claimed_base(what, read_json(dest / "adapter_config.json", what), manifest)
    except MergeError:  # a refused source leaves nothing on the node
        shutil.rmtree(dest, ignore_errors=True)
        if dest.parent.is_dir() and not any(dest.parent.iterdir()):
            dest.parent.rmdir()
        raise
    return found


def _check_claimed_base(what: str, adapter_config: dict[str, Any], manifest: TrainingManifest) -> None:
    """The adapter's `base_model_name_or_path` is this job's `base_model` (the hub name the crucible writes), or, in
    an adapter saved before the crucible wrote the name, the absolute path of this job's `model_path`."""
    claimed = str(adapter_config.get("base_model_name_or_path") or "")
    if not claimed or claimed == manifest.base_model:
        return
    if Path(claimed).is_absolute() and _same_path(claimed, manifest.model_path or manifest.base_model):
        return
    raise MergeError(
        f"{what}: its adapter_config.json says base_model_name_or_path={claimed!r}, but this merge job's "
        f"base_model is {manifest.base_model!r}; merge adapters of the same base"
    )


def _job_source(
    job_id: str,
    weight: float,
    density: float,
    *,
    manifest: TrainingManifest,
    workspace: Workspace,
    trail: AuditTrail,
    recorded_lot: str | None,
    fetch: ArtifactFetcher,
) -> JobSource:
    """One source job, checked; MergeError names the job and the reason."""
    what = f"merge source job {job_id!r}"
    theirs = _source_manifest(what, job_id, manifest, workspace)
    examined = _examined_adapter(what, trail, recorded_lot)
    published = _published_adapter(what, examined.records, examined.saved, examined.lot)
    adapter_dir = workspace.source_dir(manifest.job_id, job_id)
    found = _fetch_verified(
        what,
        fetch,
        published,
        registry=str(published.get("registry") or theirs.publish_target.registry),
        dest=adapter_dir,
        expected=dict(examined.saved["data"].get("files") or {}),
        manifest=manifest,
    )
    verdict = examined.verdict["data"]
    exam = {k: verdict.get(k) for k in ("passed", "lot_number", "metrics") if k in verdict}
    exam["seq"] = examined.verdict["seq"]
    train_path = workspace.train_split(job_id)
    return JobSource(
        job_id=job_id,
        adapter_dir=adapter_dir,
        weight=weight,
        density=density,
        lot_number=examined.lot,
        adapter_files=found,
        exam=exam,
        train_path=train_path if train_path.is_file() else None,
        published_uri=str(published.get("uri") or ""),
    )


def _published_adapter(what: str, records: list[Record], saved: Record, lot: str) -> dict[str, Any]:
    """The data of the source's latest `published` record after a passing exam of its latest adapter's lot.

    Refused: never published, or published something other than its adapter, or an adapter that differs from the
    `adapter_saved` record.
    """
    fix = (
        "merge sources are fetched from the registry the source published to, so publish the source job's adapter "
        "(`publish_target.artifact: adapter` in its manifest; a changed manifest needs a new job_id) and name that job"
    )
    passed = [
        r["seq"]
        for r in after(records, Event.EXAM_VERDICT, saved["seq"])
        if r["data"].get("passed") and r["data"].get("lot_number", lot) == lot
    ]
    published = next(
        (
            r
            for r in reversed(after(records, Event.PUBLISHED, passed[0]) if passed else [])
            if r["data"].get("lot_number", lot) == lot
        ),
        None,
    )
    if published is None:
        raise MergeError(f"{what}: its examined adapter (lot {lot[:12]}…) was never published; {fix}")
    data = dict(published["data"])
    kind = data.get("artifact")
    if kind != ADAPTER:
        raise MergeError(f"{what} published its {kind} to {data.get('uri')}, not its adapter; {fix}")
    _, shipped = weights_of(data.get("files") or {})
    expected = dict(saved["data"].get("files") or {})
    if shipped != expected:
        changed = sorted(k for k in set(shipped) | set(expected) if shipped.get(k) != expected.get(k))
        raise MergeError(
            f"{what}: the adapter it published to {data.get('uri')} is not the one it trained and examined "
            f"(files differ: {changed}); re-run and publish that job"
        )
    return data


def resolve_job_sources(
    manifest: TrainingManifest,
    *,
    workspace: Workspace,
    trail_for: Callable[[str], AuditTrail],
    recorded_lots: dict[str, str | None] | None = None,
    fetch: ArtifactFetcher = fetch_artifact,
) -> list[JobSource]:
    """Every `job:` source of the manifest, checked and fetched; one MergeError lists every source that cannot be merged.

    `recorded_lots` (optional) maps a source job to the lot number its latest `trained_adapter` materialization
    recorded (the Dagster layer passes it), which must agree with the audit trail. `fetch` brings a published adapter
    from its registry (the Dagster layer passes its publisher's, which holds the S3 client); the default reaches S3
    through boto3's own configuration.
    """
    sources, problems = [], []
    for source in manifest.merge.sources:
        if source.job is None:
            continue
        try:
            sources.append(
                _job_source(
                    source.job,
                    source.weight,
                    source.density,
                    manifest=manifest,
                    workspace=workspace,
                    trail=trail_for(source.job),
                    recorded_lot=(recorded_lots or {}).get(source.job),
                    fetch=fetch,
                )
            )
        except MergeError as e:
            problems.append(str(e))
    if problems:
        for fetched in sources:  # no merge follows: the adapters fetched for it do not stay on the node
            shutil.rmtree(fetched.adapter_dir, ignore_errors=True)
        for folder in {fetched.adapter_dir.parent for fetched in sources}:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise MergeError("; ".join(problems))
    return sources
