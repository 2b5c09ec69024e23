"""The publish gate as the audit trail proves it, and the staged artifact checked against what was examined.

A stored step output (`ExamResult`, `MergedModel`) says what the previous step handed on, but it is a file under
DAGSTER_HOME that anyone with access can rewrite, and the weights it names can change on disk after the exam. The
trail is hash-chained (and its head is in Dagster's event log), so the release is re-derived from it:

- the job's latest `exam_verdict` is of this lot, and passed;
- it examined the weights of the latest `merged` record before it (`model_sha256`, the tree digest of those files);
- the staged weights (every staged file but the publisher's own, `layout.PUBLISHER_FILES`) hash to what was recorded
  when they were saved: the `merged` record's files for a merged model, the `adapter_saved` record (before that
  merge) for an adapter.

Anything else is refused with the record numbers an auditor can look up.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry_assets.audit_events import Event, Record, latest
from foundry_assets.crucible.strategies import get_strategy
from foundry_assets.errors import FoundryError, PublishError
from foundry_assets.hashing import sha256_tree, tree_digest
from foundry_assets.manifest import PublishTarget, TrainingManifest
from foundry_assets.publisher.base import HASH_MANIFEST, weights_of


class ReleaseRefused(PublishError):
    """The trail does not prove this artifact passed its exam, or the staged files are not the examined ones."""


@dataclass(frozen=True)
class Release:
    """What the trail allows to ship: the passed verdict and the weight files' hashes recorded when they were saved."""

    verdict: Record
    saved: Record
    """The `merged` or `adapter_saved` record whose `files` the staged weights must match."""

    @property
    def expected(self) -> dict[str, str]:
        return dict(self.saved["data"].get("files") or {})


def artifact_kind(manifest: TrainingManifest) -> str:
    """What the manifest publishes. `artifact: auto` is what vLLM/TGI can serve: the merged 16-bit model for a merge
    job (named merge sources) and for a DoRA adapter (neither server loads DoRA adapters), the adapter otherwise."""
    kind: str = manifest.publish_target.artifact
    if kind == "auto":
        servable = not get_strategy(manifest.method_config.type).use_dora
        kind = "adapter" if servable and not manifest.merge.sources else "merged_model"
    return kind


def release_from_trail(records: list[Record], *, lot: str, kind: str) -> Release:
    """The release the trail proves for `lot`, or `ReleaseRefused` saying which record is missing or disagrees."""
    verdict = latest(records, Event.EXAM_VERDICT)
    if verdict is None or verdict["data"].get("lot_number") != lot:
        raise ReleaseRefused(f"the audit trail holds no exam verdict of lot {lot[:12]}…; run the exam again")
    if verdict["data"].get("passed") is not True:
        reasons = "; ".join(str(r) for r in verdict["data"].get("reasons") or []) or "no reason recorded"
        raise ReleaseRefused(f"the trail's latest exam verdict (record #{verdict['seq']}) failed: {reasons}")
    merged = latest(records, Event.MERGED, before=verdict["seq"])
    if merged is None:
        raise ReleaseRefused(
            f"no `merged` record precedes exam verdict #{verdict['seq']}: what was examined?"
        )
    examined = verdict["data"].get("model_sha256")
    if examined != tree_digest(dict(merged["data"].get("files") or {})):
        raise ReleaseRefused(
            f"exam verdict #{verdict['seq']} examined weights {str(examined)[:12]}…, not those of merge record "
            f"#{merged['seq']}; run the exam again on the merged model"
        )
    if kind == "merged_model":
        return Release(verdict, merged)
    saved = latest(records, Event.ADAPTER_SAVED, before=merged["seq"])
    if saved is None:
        raise ReleaseRefused(f"no `adapter_saved` record precedes merge record #{merged['seq']}")
    return Release(verdict, saved)


def staged_hashes(staging: Path) -> dict[str, str]:
    """Every staged file's SHA256 (as the registry will list them: `MANIFEST.sha256` aside)."""
    return {name: digest for name, digest in sha256_tree(staging).items() if name != HASH_MANIFEST}


def check_staged(staged: dict[str, str], *, kind: str, release: Release) -> None:
    """The staged weights (the tag root's files but the publisher's own) are exactly the recorded ones, byte for
    byte; `ReleaseRefused` names the first that differs, is missing or is extra."""
    _, weights = weights_of(staged)
    expected = release.expected
    differing = sorted(set(weights.items()) ^ set(expected.items()))
    if differing:
        name = differing[0][0]
        what = "missing" if name not in weights else "not recorded" if name not in expected else "changed"
        raise ReleaseRefused(
            f"{len({n for n, _ in differing})} staged {kind} file(s) differ from record #{release.saved['seq']} "
            f"({release.saved['event']}), e.g. {name!r} ({what}): the weights changed on disk after they were "
            "saved and examined; nothing is published. Run the job again to rebuild and re-examine them."
        )


def published_record(records: list[Record], target: PublishTarget, lot: str) -> Record | None:
    """The latest `published` record of this lot under this tag and registry (the publish a re-run must not repeat)."""
    matching = [record for record in records if record.get("event") == Event.PUBLISHED]
    return next((r for r in reversed(matching) if same_target(r, target, lot)), None)


def same_target(record: Record, target: PublishTarget, lot: str) -> bool:
    """Whether a publish record is about this lot under this tag of this registry."""
    data = record["data"]
    return bool(
        data.get("tag") == target.tag
        and data.get("registry", target.registry) == target.registry
        and data.get("lot_number", lot) == lot
    )


def verified_release(
    records: list[Record],
    target: PublishTarget,
    lot: str,
    verify: Callable[[str, str, dict[str, str]], Any],
) -> Record | None:
    """The lot's `published` record under `target` when its registry copy still verifies (`verify(registry, tag,
    files)` raises otherwise): then a run of the lot would only rebuild weights that are never published over it.
    None when the lot is not published there, or its copy is gone or changed (a run publishes it again, or says why).
    """
    record = published_record(records, target, lot)
    if record is None:
        return None
    try:
        verify(target.registry, target.tag, dict(record["data"].get("files") or {}))
    except FoundryError:
        return None
    return record


def already_published(job_id: str, record: Record, lot: str) -> str:
    """What a run of an already-published lot says instead of training: where the release is and how to train anew."""
    data = record["data"]
    return (
        f"job {job_id}: this lot is already published (audit record #{record['seq']}) and the registry copy "
        f"verifies; nothing to run (to train it again, give the manifest a new publish_target.tag).\n"
        f"published:  {data.get('uri')}\n"
        f"tag:        {data.get('tag')} (already published, {data.get('artifact')})\n"
        f"lot number: {lot}"
    )
