"""Fault injection for tests: run a callable as if its folder were full.

A real full disk is hard to make in a test (a loop device needs root, a tmpfs is shared). A process's file-size limit
gives the same failure for the files it writes: with `RLIMIT_FSIZE` at n bytes and `SIGXFSZ` ignored, a write that
would carry a file past n bytes writes what fits and returns short, and the next write fails with `OSError(EFBIG)` —
exactly the "written part-way, then no space" that a full disk produces. The limit is set in a fresh child process, so
the test process and its other files are untouched.

Use::

    from foundry_assets_tests.faults import run_with_file_size_limit

    # `append_one` must be importable by name (a module-level function): the child is spawned, not forked.
    with pytest.raises(AuditError, match="EFBIG"):
        run_with_file_size_limit(trail.stat().st_size + 40, append_one, trail)

The callable's return value comes back, and its exception is raised here (both must pickle). The limit applies to
every file the child writes, counted as the file's size, not the bytes written by the call: give the size the file
may reach (e.g. its current size plus a few bytes).
"""

import resource
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")


def _limit_file_size(limit: int) -> None:
    signal.signal(
        signal.SIGXFSZ, signal.SIG_IGN
    )  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def run_with_file_size_limit(limit: int, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `func(*args, **kwargs)` in a spawned child whose files cannot grow past `limit` bytes; return its result or
    raise its exception."""
    with ProcessPoolExecutor(
        max_workers=1, mp_context=get_context("spawn"), initializer=_limit_file_size, initargs=(limit,)
    ) as pool:
        return pool.submit(func, *args, **kwargs).result()
