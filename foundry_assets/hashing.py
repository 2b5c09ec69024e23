"""Streamed SHA256 of files, texts and folders: the hashes the lot number, the audit trail and the registries share."""

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA256 of a file, read in 1 MiB chunks so any size fits in constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_tree(root: str | Path) -> dict[str, str]:
    """SHA256 of every regular file under `root`, keyed by its POSIX path relative to `root`, sorted."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def tree_digest(hashes: dict[str, str]) -> str:
    """One SHA256 over a tree's `path  hash` lines (the format of sha256sum), e.g. for a folder's identity."""
    return sha256_text("".join(f"{h}  {name}\n" for name, h in sorted(hashes.items())))
