"""Spherical k-means for SemDeDup, in numpy: cosine similarity to unit centroids, seeded, O(n·d + k·d) memory.

As in faiss (which SemDeDup's reference code uses), the centroids are fitted on a seeded sample of at most
`max_points_per_centroid` rows per cluster, then every row is assigned in blocks. Rows may be a float16/float32 array
or a read-only memory map; they are read a block at a time and normalised on the fly, never copied whole.
"""

from dataclasses import dataclass

import numpy as np

ASSIGN_BLOCK = 8_192
"""Rows per block when assigning: a few block × k float32 matrices (32 MB each at k = 1,000)."""
BOUND_EPS = 1e-5
"""Added to the probing bound: far above the float32 rounding of the similarities it compares (~1e-6)."""


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
    """Every row's nearest centroid (`label`) and its cosine to it (`similarity`), and the further clusters each row
    probes: `probe_clusters[probe_bounds[i]:probe_bounds[i + 1]]` for row i (CSR layout, rows in order)."""

    centroids: np.ndarray
    label: np.ndarray
    similarity: np.ndarray
    probe_clusters: np.ndarray
    probe_bounds: np.ndarray


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


def _probed(
    sims: np.ndarray,
    label: np.ndarray,
    centroids: np.ndarray,
    reach: float | None,
    margin: float | None,
    extra: int,
) -> np.ndarray:
    """Which further clusters each row of a block probes (mask over the k centroids, own cluster excluded), given the
    block's similarities to every centroid (overwritten with each row's gap to its nearest)."""
    rows = np.arange(sims.shape[0])
    gap = np.subtract(sims[rows, label][:, None], sims, out=sims)
    if margin is not None:
        allowed = gap <= np.float32(margin)
    else:  # the row's distance to the bisecting hyperplane of the two centroids, times their distance apart
        apart = centroids[label] @ centroids.T
        np.sqrt(np.maximum(2.0 - 2.0 * apart, 0.0, out=apart), out=apart)
        allowed = gap <= apart * np.float32(reach) + np.float32(BOUND_EPS)
    allowed[rows, label] = False
    if extra < centroids.shape[0] - 1:  # at most `extra` further clusters: the nearest of those allowed
        gap[~allowed] = np.inf
        nearest = np.argpartition(gap, extra - 1, axis=1)[:, :extra]
        capped = np.zeros_like(allowed)
        capped[rows[:, None], nearest] = True
        allowed &= capped
    return allowed


def assign(
    embeddings: np.ndarray,
    centroids: np.ndarray,
    *,
    reach: float | None = None,
    margin: float | None = None,
    probes: int | None = None,
) -> Assignment:
    """Every row's nearest centroid and the further clusters it probes, computed a block of rows at a time.

    A row probes a further cluster B when its distance to the hyperplane halfway between its own centroid A and B is
    at most `reach` (`(cos(x, A) − cos(x, B)) / |A − B|`; the bound that makes SemDeDup exact, see `semdedup`), or,
    with `margin`, when cos(x, B) is within `margin` of cos(x, A); `probes` caps the clusters a row is compared in
    (its own included; the nearest are kept). Neither reach nor margin: no further cluster."""
    n, k = embeddings.shape[0], centroids.shape[0]
    extra = 0 if reach is None and margin is None else min(k, probes or k) - 1
    label = np.empty(n, dtype=np.int32)
    similarity = np.empty(n, dtype=np.float32)
    clusters: list[np.ndarray] = []
    counts = np.zeros(n + 1, dtype=np.int64)
    for s in range(0, n, ASSIGN_BLOCK):
        block = unit_block(embeddings[s : s + ASSIGN_BLOCK])
        sims = block @ centroids.T
        best = sims.argmax(axis=1)
        label[s : s + len(block)] = best
        similarity[s : s + len(block)] = sims[np.arange(len(block)), best]
        if extra:
            rows, cols = np.nonzero(_probed(sims, best, centroids, reach, margin, extra))
            clusters.append(cols.astype(np.int32))
            counts[s + 1 : s + len(block) + 1] = np.bincount(rows, minlength=len(block))
    probe_clusters = np.concatenate(clusters) if clusters else np.zeros(0, dtype=np.int32)
    return Assignment(centroids, label, similarity, probe_clusters, np.cumsum(counts))
