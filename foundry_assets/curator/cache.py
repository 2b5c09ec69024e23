"""An embedding cache keyed by content: a re-run, or a new drop that repeats records, does not re-embed them.

Layout: ``<cache_dir>/<model name>/`` holds shards, each a pair ``<id>.keys.npy`` (sha256 digests of the embedded
texts, a uint8 array of n × 32) and ``<id>.vecs.npy`` (float32, one row per key). A shard is written to temporary names and renamed into
place, vectors first and keys last, so a reader sees a complete shard or none; two processes may write at once (each
writes its own shards; a key present twice is harmless). Vectors are read through memory maps. The key is
sha256(model name + NUL + text), so changing the model (or its name) never returns another model's vectors.

Keys are raw bytes, not numpy ``S32`` strings: ``S32`` strips trailing NUL bytes when read back, so the ≈ 1 in 256
digests that end in one were never found again (re-embedded on every run, with vectors that may differ in the last
bits). Shards written that way are still read: their buffers hold all 32 bytes (`_digests`).
"""

import hashlib
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from foundry_assets.fsio import atomic_file


class Embedder(Protocol):
    """What the curator needs from an embedder."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


_KEY_BYTES = 32


def _digests(keys: np.ndarray) -> list[bytes] | None:
    """The 32-byte keys of a shard: a uint8 array of n × 32, or (older shards) ``S32``, whose buffer keeps the
    trailing NUL bytes that its `tolist()` would strip. None for anything else (the shard is skipped)."""
    rows = keys.dtype == np.uint8 and keys.ndim == 2 and keys.shape[1] == _KEY_BYTES
    strings = keys.dtype.kind == "S" and keys.dtype.itemsize == _KEY_BYTES and keys.ndim == 1
    if not (rows or strings):
        return None
    raw = np.ascontiguousarray(keys).tobytes()
    return [raw[i : i + _KEY_BYTES] for i in range(0, len(raw), _KEY_BYTES)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


class EmbeddingCache:
    """Content-addressed float32 vectors for one model in a folder of .npy shards."""

    def __init__(self, cache_dir: Path | str, model_name: str, dim: int) -> None:
        self.model_name = model_name
        self.dim = dim
        self.folder = Path(cache_dir) / _safe(model_name)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[np.ndarray] = []
        for keys_path in sorted(self.folder.glob("*.keys.npy")):
            vecs_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vecs.npy"))
            keys = _digests(np.load(keys_path))
            vecs = np.load(vecs_path, mmap_mode="r")
            if keys is None or vecs.shape != (len(keys), dim):
                continue  # not a shard of 32-byte keys, or of another dimension (renamed model); never served
            shard = len(self._shards)
            self._shards.append(vecs)
            for row, key in enumerate(keys):
                self._index.setdefault(key, (shard, row))

    def key(self, text: str) -> bytes:
        return hashlib.sha256(self.model_name.encode() + b"\0" + text.encode("utf-8")).digest()

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(mask of keys found, their vectors in order, float32 (found, dim))."""
        found = np.array([k in self._index for k in keys], dtype=bool)
        vectors = np.empty((int(found.sum()), self.dim), dtype=np.float32)
        for out, k in enumerate(k for k, hit in zip(keys, found, strict=True) if hit):
            shard, row = self._index[k]
            vectors[out] = self._shards[shard][row]
        return found, vectors

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Store a new shard (atomically) and index it."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(
                f"cache add: {vectors.shape} vectors for {len(keys)} keys of dimension {self.dim}"
            )
        stem = uuid.uuid4().hex
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        for suffix, array in ((".vecs.npy", vectors), (".keys.npy", key_array)):
            with atomic_file(self.folder / f"{stem}{suffix}") as f:
                np.save(f, array)
        shard = len(self._shards)
        self._shards.append(vectors)
        for row, k in enumerate(keys):
            self._index.setdefault(k, (shard, row))


def embed_texts(
    texts: list[str],
    embedder: Embedder,
    *,
    cache: EmbeddingCache | None = None,
    on_new: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` (float32, n × dim) and how many were computed (the rest came from the cache).

    Equal texts inside one call are embedded once."""
    if cache is None:
        vectors = np.asarray(embedder.encode(list(texts)), dtype=np.float32)
        return vectors, len(texts)
    keys = [cache.key(t) for t in texts]
    found, cached = cache.lookup(keys)
    out = np.empty((len(texts), cache.dim), dtype=np.float32)
    out[found] = cached
    first_of: dict[bytes, int] = {}
    for i in np.flatnonzero(~found).tolist():
        first_of.setdefault(keys[i], i)
    new_rows = list(first_of.values())
    if new_rows:
        if on_new is not None:
            on_new(len(new_rows))
        fresh = np.asarray(embedder.encode([texts[i] for i in new_rows]), dtype=np.float32)
        cache.add([keys[i] for i in new_rows], fresh)
        where = {keys[i]: r for r, i in enumerate(new_rows)}
        missing = np.flatnonzero(~found)
        out[missing] = fresh[[where[keys[i]] for i in missing.tolist()]]
    return out, len(new_rows)
