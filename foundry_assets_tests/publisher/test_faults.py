"""Fault injection into the publish: a real SIGKILL at each step, a full disk at the `published` record, and two
publishes of one job at once. After recovery the registry and the trail agree: the tag holds exactly the files of the
lot's one `published` record, the chain verifies, and no staging or temporary folder is left behind.

Each kill runs the publish in a forked child that sends itself SIGKILL at the chosen point (no cleanup code runs, as
under the OOM killer); the parent then runs the publish again, as the next run (or Dagster's retry) would.
"""

import errno
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.audit import verify_audit_log
from foundry_assets.audit_events import Event
from foundry_assets.errors import AuditError
from foundry_assets.hashing import sha256_tree
from foundry_assets.publisher import PublishJobError, PublishResult
from foundry_assets.publisher.base import HASH_MANIFEST
from foundry_assets_tests.publisher.jobs import JOB, Job, LocalRegistry

pytestmark = pytest.mark.faults


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingRegistry(LocalRegistry):
    """The local registry, killed at `point`: mid-copy of the upload, or after the tag's rename before recording."""

    def __init__(self, point: str) -> None:
        self.point = point

    def push(
        self, staging: Path, version_tag: str, *, registry: str, on_verified: Any = None
    ) -> PublishResult:
        if self.point == "mid-upload":
            import foundry_assets.publisher.local as local

            copied: list[str] = []
            copyfile = local.shutil.copyfile

            def one_file_then_die(source: Path, dest: Path) -> None:
                if copied:  # the first file is in the partial folder, the second one is not
                    _die()
                copied.append(str(copyfile(source, dest)))

            local.shutil.copyfile = one_file_then_die  # type: ignore[assignment]  # in the child only
        if self.point == "after-rename":
            on_verified = lambda _result: _die()  # noqa: E731  # the tag is in place, nothing recorded
        return super().push(staging, version_tag, registry=registry, on_verified=on_verified)


def _killing_audit(job: Job, point: str) -> Callable[..., str]:
    """The job's audit writer, killed just before (`before:<event>`) or just after (`after:<event>`) an append."""

    def audit(event: str, **data: Any) -> str:
        if point == f"before:{event}":
            _die()
        head = job.audit(event, **data)
        if point == f"after:{event}":
            _die()
        return head

    return audit


KILL_POINTS = [
    "before:publish_started",  # staged, nothing recorded
    "after:publish_started",  # the intent recorded, nothing pushed
    "mid-upload",  # a partial copy in the registry's temporary folder
    "after-rename",  # the tag is complete in the registry, the trail does not know
    "after:published",  # recorded; staging and the node's weights still there
    "before:node_weights_removed",  # weights removed, their removal not recorded
]


def _agree(job: Job) -> dict[str, Any]:
    """The registry, the trail and the node agree after recovery; returns the one `published` record."""
    assert verify_audit_log(job.trail.path).ok
    published = [r for r in job.trail.records() if r["event"] == Event.PUBLISHED]
    assert len(published) == 1, [r["event"] for r in job.trail.records()]
    tag = job.registry / "v1"
    assert {k: v for k, v in sha256_tree(tag).items() if k != HASH_MANIFEST} == published[0]["data"]["files"]
    assert [p.name for p in job.registry.iterdir()] == ["v1"], "a temporary folder is left in the registry"
    assert not job.workspace.staging_dir(JOB, "v1").exists()
    assert not job.workspace.adapter_dir(JOB).exists() and not job.workspace.merged_dir(JOB).exists()
    return published[0]


def _rebuild(job: Job) -> None:
    """What a whole re-run does before its publish: train and merge again (other bytes: training is not
    bit-reproducible), record both, and examine the new weights."""
    for folder in (job.workspace.adapter_dir(JOB), job.workspace.merged_dir(JOB)):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(os.urandom(64))
    job.audit(Event.ADAPTER_SAVED, files=sha256_tree(job.workspace.adapter_dir(JOB)))
    job.audit(Event.MERGED, files=sha256_tree(job.workspace.merged_dir(JOB)))


@pytest.mark.parametrize("rerun", ["retry", "whole job"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_publish_killed_at_any_step_is_completed_by_the_next_run_and_recorded_once(
    tmp_path: Path, point: str, rerun: str
) -> None:
    """The next run is Dagster's retry of the step (same weights, same exam) or a whole new run of the job, which
    rebuilt and re-examined the weights before its publish."""
    job = Job(tmp_path)
    exam = job.exam()
    child = multiprocessing.get_context("fork").Process(
        target=lambda: job.publish(exam, _KillingRegistry(point), _killing_audit(job, point))
    )
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, f"the child was not killed at {point} (exit {child.exitcode})"

    if point == "mid-upload":
        assert list(job.registry.glob(".v1.work-*")), "the kill left the partial copy the next run must clean"
    if rerun == "whole job":
        _rebuild(job)
        exam = job.exam()
    again = job.publish(exam)
    record = _agree(job)
    assert again.artifact.files == record["data"]["files"]
    if point == "after-rename":  # pushed but never recorded: completed from the intent, and says so
        started = [r["seq"] for r in job.trail.records() if r["event"] == Event.PUBLISH_STARTED]
        assert record["data"]["recovered_from"] == started[-1]
    assert job.publish(exam).artifact.status == "unchanged" and _agree(job) == record  # and again: a no-op


def test_a_full_disk_at_the_published_record_fails_the_step_and_the_next_run_records_it_once(
    tmp_path: Path,
) -> None:
    """The trail's folder is full when `published` is written: the step fails (staging kept, nothing lost); once
    space returns, the next run finds the verified tag of its `publish_started` record and records it once."""
    job = Job(tmp_path)
    exam = job.exam()

    def full_disk(event: str, **data: Any) -> str:
        if event in (Event.PUBLISHED, Event.PUBLISH_FAILED):
            raise AuditError(f"{job.trail.path}: {os.strerror(errno.ENOSPC)}")
        return job.audit(event, **data)

    with pytest.raises(AuditError, match="No space left"):
        job.publish(exam, audit=full_disk)
    assert (job.registry / "v1").is_dir() and Event.PUBLISHED not in job.events()
    assert job.workspace.adapter_dir(JOB).exists(), "no weights leave the node before the publish is recorded"

    job.publish(exam)
    _agree(job)


def test_two_publishes_of_one_job_at_once_publish_and_record_once(tmp_path: Path) -> None:
    """Two runs of one partition reach the publish together: one pushes and records, the other waits for it and
    finds the lot published (a no-op)."""
    job = Job(tmp_path)
    exam = job.exam()
    results: list[str] = []
    barrier = threading.Barrier(2)

    def publish() -> None:
        barrier.wait()
        try:
            results.append(job.publish(exam).artifact.status)
        except PublishJobError as e:
            results.append(str(e))

    threads = [threading.Thread(target=publish) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["published", "unchanged"], results
    _agree(job)
