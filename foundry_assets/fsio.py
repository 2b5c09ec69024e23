"""Files and folders written whole: never half-written, never lost.

Every write the foundry keeps goes through here: the content is written to a temporary name beside its target,
flushed and fsynced, then renamed into place (atomic on one file system), and the parent folder is fsynced so the
rename survives a crash. A folder is built beside its target under a temporary name and swapped in by rename; the old
one is removed only once the new one is in place.
"""

import fcntl
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""The mode a plain `open(path, "w")` gives a new file (read once, at import, while one thread runs): what the atomic
writes give theirs, where `mkstemp` alone would leave 0600 and make the foundry's files unreadable to other users."""


def _temp_beside(target: Path) -> tuple[int, str]:
    """A new temporary file beside `target` (descriptor and name), with the mode a plain open would give it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform or file system that cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; on a clean exit it is fsynced and renamed to `path`,
    on an error it is removed and `path` is untouched. Parent folders are created."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, value: Any, **dumps: Any) -> Path:
    """Write `value` as JSON (UTF-8) to `path` atomically; `dumps` are passed to `json.dumps`."""
    return write_text(path, json.dumps(value, **dumps))


def jsonl_bytes(rows: Iterable[dict[str, Any]]) -> bytes:
    """JSONL bytes: one compact JSON object per line, UTF-8, newline-terminated."""
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write `rows` as JSONL to `path` atomically."""
    return write_bytes(path, jsonl_bytes(rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file the foundry wrote (blank lines skipped)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def copy_file(source: str | Path, dest: str | Path) -> Path:
    """Copy `source` to `dest` atomically (a reader never sees a partial copy)."""
    with atomic_file(dest) as handle, open(source, "rb") as src:
        shutil.copyfileobj(src, handle, 1 << 20)
    return Path(dest)


def write_files(files: dict[Path, bytes]) -> None:
    """Write several files, each to a temp name beside it, then rename all into place: none is renamed before every
    one is written; on failure the temps are removed and no target changes."""
    temps: list[tuple[str, Path]] = []
    try:
        for target, payload in files.items():
            fd, tmp = _temp_beside(target)
            temps.append((tmp, target))
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, target in temps:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for folder in {target.parent for target in files}:
        _fsync_dir(folder)


def replace_dir(source: Path, dest: Path) -> None:
    """Rename `source` to `dest`; an existing `dest` is moved aside first, put back if the rename fails, and removed
    only once `source` is in place. Both must be on one file system (build `source` beside `dest`)."""
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    if dest.exists():
        os.rename(dest, old)
    try:
        os.rename(source, dest)
    except OSError:
        if old.exists():
            os.rename(old, dest)
        raise
    _fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def _owner() -> str:
    """Who builds a folder (pid@host, in its temporary name): a killed builder's leftovers can be told from a live
    one's. Read at each build, never cached: a forked worker is another owner than its parent."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _owner_alive(owner: str) -> bool:
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another node's (a shared volume): only that node can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_work_dirs(dest: str | Path) -> list[Path]:
    """Remove the temporary folders `build_dir` left beside `dest` when its process was killed (a SIGKILL runs no
    cleanup); those of live processes, and of other nodes, are left alone. Returns what was removed."""
    target = Path(dest)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for leftover in target.parent.glob(f".{target.name}.work-*"):
        owner = leftover.name[len(f".{target.name}.work-") :].rpartition(".")[0]
        if leftover.is_dir() and owner.count("@") == 1 and not _owner_alive(owner):
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


def build_dir(dest: str | Path, build: Callable[[Path], object], *, replace: bool = True) -> Path:
    """Build a folder whole: `build(tmp)` fills a temporary folder beside `dest`, which then takes `dest`'s place
    (`replace_dir`; with `replace=False` a plain rename that fails if `dest` appeared meanwhile). On an error the
    temporary folder is removed and `dest` is untouched."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_dead_work_dirs(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.work-{_owner()}."))
    try:
        build(tmp)
        if replace:
            replace_dir(tmp, target)
        else:
            os.rename(tmp, target)
            _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the block; other processes wait. The kernel
    releases it when the holder dies, so a killed holder never blocks the next one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
