"""Spherical k-means for SemDeDup, in numpy: cosine similarity to unit centroids, seeded, O(n·d + k·d) memory.

As in faiss (which SemDeDup's reference code uses), the centroids are fitted on a seeded sample of at most
`max_points_per_centroid` rows per cluster, then every row is assigned in blocks. Rows may be a float16/float32 array
or a read-only memory map; they are read a block at a time and normalised on the fly, never copied whole.
"""

from dataclasses import dataclass

import numpy as np

ASSIGN_BLOCK = 16_384
"""Rows per block when assigning: a block × k float32 similarity matrix (64 MB at k = 1,000)."""


def unit_block(rows: np.ndarray) -> np.ndarray:
    """float32 copy of a block of rows scaled to unit length (zero rows stay zero); rejects NaN/inf."""
    block = np.array(rows, dtype=np.float32, copy=True)
    if not np.isfinite(block).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    np.divide(block, norms, out=block, where=norms > 0)
    return block


@dataclass(frozen=True)
class Assignment:
    """The `probes` nearest centroids of every row (best first) and the cosine similarity to the nearest.

    `label` is the nearest centroid (column 0 of `nearest`), `second` the second-nearest (the nearest again when only
    one is asked for or there is one centroid); `nearest_similarity` holds the cosine to each of `nearest`."""

    centroids: np.ndarray
    label: np.ndarray
    second: np.ndarray
    similarity: np.ndarray
    nearest: np.ndarray
    nearest_similarity: np.ndarray


def _top(block: np.ndarray, centroids: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The p nearest centroids of every row of `block` (best first; ties → lower centroid index) and their
    similarities: p argmax passes (much cheaper than a partition over k columns for the small p used here)."""
    sims = block @ centroids.T
    rows = np.arange(sims.shape[0])
    nearest = np.empty((sims.shape[0], p), dtype=np.int32)
    values = np.empty((sims.shape[0], p), dtype=np.float32)
    for j in range(p):
        best = sims.argmax(axis=1)
        nearest[:, j] = best
        values[:, j] = sims[rows, best]
        if j + 1 < p:
            sims[rows, best] = -np.inf
    return nearest, values


def fit_centroids(
    embeddings: np.ndarray, k: int, *, seed: int = 0, iterations: int = 10, max_points_per_centroid: int = 64
) -> np.ndarray:
    """Unit centroids (k, d) from Lloyd iterations on a seeded sample; empty clusters are re-seeded."""
    n = embeddings.shape[0]
    if not 1 <= k <= max(n, 1):
        raise ValueError(f"n_clusters is {k!r}; it must lie between 1 and the number of rows ({n})")
    rng = np.random.default_rng(seed)
    take = min(n, k * max_points_per_centroid)
    sample_rows = np.sort(rng.choice(n, size=take, replace=False)) if take < n else np.arange(n)
    sample = unit_block(embeddings[sample_rows])
    centroids = sample[rng.choice(take, size=k, replace=False)].copy()
    for _ in range(iterations):
        labels = np.empty(take, dtype=np.int32)
        best = np.empty(take, dtype=np.float32)
        for s in range(0, take, ASSIGN_BLOCK):
            sims = sample[s : s + ASSIGN_BLOCK] @ centroids.T
            labels[s : s + ASSIGN_BLOCK] = sims.argmax(axis=1)
            best[s : s + ASSIGN_BLOCK] = sims.max(axis=1)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(centroids)
        present = np.flatnonzero(counts)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))[present]
        sums[present] = np.add.reduceat(sample[order], starts, axis=0)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # re-seed with the rows worst served by their centroid (deterministic)
            sums[empty] = sample[np.argsort(best, kind="stable")[: empty.size]]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    return centroids


def assign(embeddings: np.ndarray, centroids: np.ndarray, probes: int = 2) -> Assignment:
    """The `probes` nearest centroids of every row (at most k), computed a block of rows at a time."""
    n = embeddings.shape[0]
    p = max(1, min(probes, centroids.shape[0]))
    nearest = np.empty((n, p), dtype=np.int32)
    nearest_similarity = np.empty((n, p), dtype=np.float32)
    for s in range(0, n, ASSIGN_BLOCK):
        block = unit_block(embeddings[s : s + ASSIGN_BLOCK])
        nearest[s : s + len(block)], nearest_similarity[s : s + len(block)] = _top(block, centroids, p)
    label = nearest[:, 0]
    second = nearest[:, 1] if p > 1 else label
    return Assignment(
        centroids=centroids,
        label=label,
        second=second,
        similarity=nearest_similarity[:, 0],
        nearest=nearest,
        nearest_similarity=nearest_similarity,
    )
