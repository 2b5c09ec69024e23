"""SemDeDup (Abbas et al. 2023, arXiv 2303.09540): k-means on the embeddings, then near-duplicates inside clusters.

The rule. Every record gets a rank from the keep policy. A record is a duplicate, and removed, when its cosine
similarity to a record of better rank that was KEPT exceeds the threshold (0.95 by default: the paper's epsilon 0.05);
it then points at the most similar such kept record (ties → the better rank). Otherwise it is kept. So each group of
near-copies keeps its best-ranked member, and a chain a≈b≈c with a≉c keeps a and c (c is compared with kept records
only, never with the removed b; the paper's reference code compares with every earlier record and would drop c too).

Keep policies (which member of a group survives):

- ``earliest`` (the foundry's default): file order. The survivor is the first occurrence, which in a synthesis drop is
  the seed the paraphrases came from; it does not depend on where k-means put its centroids, so re-running a drop that
  grew keeps the same survivors (stable train/test splits, small diffs between lots), and an auditor can replay it.
- ``hard`` (the paper's choice): the member least similar to its cluster centroid (the least prototypical) survives.
- ``easy``: the member most similar to its centroid survives.
- ``random``: a seeded random permutation.

Where it is exact and where not. Pairs are compared only inside a cluster (the paper's trade: O(Σ cluster²·d) instead
of O(n²·d)), so two near-copies that k-means puts in different clusters are not compared. A second, cheap pass
(``boundary_pass``) regroups the survivors by the pair {nearest, second-nearest centroid} and deduplicates inside those
groups, which catches most such pairs across a shared boundary; pairs split three ways can still be missed. With one
cluster (the default below `CLUSTER_SIZE` records) the result is exact: it equals `exact_semdedup`.
`benchmarks/bench_curator.py` measures the recall against exact all-pairs search.

Memory: O(n + k·d) besides the input, which may be a float16/float32 memory map; a cluster is copied as float32 while it
is deduplicated and its similarities are computed a block of rows at a time (at most `_MAX_BLOCK_CELLS` floats), never
as an n×n matrix. The float32 block products only pick candidates (within `_SLACK` of the threshold); each candidate's
similarity is recomputed in float64 from the two vectors, so the result does not depend on the block size.
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from foundry_assets.curator.kmeans import assign, fit_centroids, unit_block

KeepPolicy = Literal["earliest", "hard", "easy", "random"]
CLUSTER_SIZE = 1_000
"""Automatic cluster count: ceil(n / CLUSTER_SIZE), so a drop below this size is one cluster (exact search)."""
_SLACK = 1e-4
"""Candidate margin for the float32 block products; far above their rounding error (~1e-6 for unit vectors)."""
_MAX_BLOCK_CELLS = 1 << 24


@dataclass(frozen=True)
class RemovedItem:
    """A removed record: its index, the kept record it duplicates and their cosine similarity."""

    index: int
    kept_index: int
    similarity: float


@dataclass
class DedupResult:
    """Indices kept (ascending), what was removed and why, the settings, and each record's nearest-neighbour cosine
    inside its cluster (NaN for a record alone in its cluster; None when not computed)."""

    kept: list[int]
    removed: list[RemovedItem]
    threshold: float
    n: int = 0
    n_clusters: int = 1
    keep: str = "earliest"
    removed_in_boundary_pass: int = 0
    nn_similarity: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_metadata(self) -> dict[str, float | int | str]:
        """JSON-able counters."""
        return {
            "rows_in": self.n,
            "kept": len(self.kept),
            "removed": len(self.removed),
            "threshold": self.threshold,
            "n_clusters": self.n_clusters,
            "keep_policy": self.keep,
            "removed_in_boundary_pass": self.removed_in_boundary_pass,
        }


def _dedup_group(
    e: np.ndarray,
    members: np.ndarray,
    threshold: float,
    removed: list[RemovedItem],
    nn_out: np.ndarray | None = None,
) -> None:
    """The greedy rule over `members` (global row indices, best rank first); appends what it removes."""
    m = len(members)
    x = unit_block(e[members])
    cut = threshold - _SLACK
    kept = np.zeros(m, dtype=bool)
    step = max(1, min(m, _MAX_BLOCK_CELLS // max(m, 1)))
    for s in range(0, m, step):
        t = min(s + step, m)
        sims = x[s:t] @ (x if nn_out is not None else x[:t]).T
        rows = np.arange(t - s)
        if nn_out is not None:
            diagonal = sims[rows, s + rows].copy()
            sims[rows, s + rows] = -np.inf
            nn_out[members[s:t]] = sims.max(axis=1) if m > 1 else np.nan
            sims[rows, s + rows] = diagonal
        best_sim = np.full(t - s, -np.inf)
        best_col = np.full(t - s, -1, dtype=np.int64)
        # 1. against members of earlier blocks that were kept
        earlier = np.flatnonzero(kept[:s])
        if earlier.size:
            r, c = np.nonzero(sims[:, earlier] > cut)
            if r.size:
                cols = earlier[c]
                exact = np.einsum("ij,ij->i", x[s + r].astype(np.float64), x[cols].astype(np.float64))
                order = np.lexsort((cols, -exact, r))
                first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
                best_sim[r[first]] = exact[first]
                best_col[r[first]] = cols[first]
        # 2. inside the block, in rank order: only rows with an earlier in-block candidate need a Python step
        cand = np.tril(sims[:, s:t] > cut, k=-1)
        keep_block = best_sim <= threshold
        for row in np.flatnonzero(cand.any(axis=1)):
            cols = np.flatnonzero(cand[row, :row] & keep_block[:row])
            if cols.size:
                exact = x[s + cols].astype(np.float64) @ x[s + row].astype(np.float64)
                j = int(np.argmax(exact))  # first maximum → best rank among ties
                if exact[j] > best_sim[row] or (exact[j] == best_sim[row] and s + cols[j] < best_col[row]):
                    best_sim[row], best_col[row] = exact[j], s + cols[j]
            keep_block[row] = best_sim[row] <= threshold
        kept[s:t] = keep_block
        for row in np.flatnonzero(~keep_block):
            removed.append(
                RemovedItem(
                    index=int(members[s + row]),
                    kept_index=int(members[best_col[row]]),
                    similarity=float(best_sim[row]),
                )
            )


def _groups(keys: np.ndarray, rank: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """Split `rows` by key, each group sorted by rank (groups of one are dropped: nothing to compare)."""
    order = np.lexsort((rank[rows], keys))
    sorted_rows, sorted_keys = rows[order], keys[order]
    bounds = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
    return [sorted_rows[a:b] for a, b in itertools.pairwise(bounds) if b - a > 1]


def _ranks(keep: KeepPolicy, centroid_similarity: np.ndarray, seed: int) -> np.ndarray:
    """Rank of every record under the keep policy (0 = survives first); ties → file order."""
    n = centroid_similarity.size
    index = np.arange(n)
    if keep == "earliest":
        return index
    if keep == "random":
        key: np.ndarray = np.random.default_rng(seed).permutation(n)
    elif keep == "easy":
        key = -centroid_similarity.astype(np.float64)
    else:  # hard
        key = centroid_similarity.astype(np.float64)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((index, key))] = index
    return rank


def auto_clusters(n: int) -> int:
    """The default cluster count: ceil(n / CLUSTER_SIZE), at least 1."""
    return max(1, math.ceil(n / CLUSTER_SIZE))


def semdedup(
    embeddings: np.ndarray,
    threshold: float = 0.95,
    *,
    n_clusters: int | None = None,
    keep: KeepPolicy = "earliest",
    seed: int = 0,
    boundary_pass: bool = True,
    nearest_neighbours: bool = True,
) -> DedupResult:
    """SemDeDup: cluster, then remove records with cosine > threshold to a better-ranked kept record of their cluster."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is {threshold!r}; a cosine threshold lies in [-1, 1] (e.g. 0.95)")
    if keep not in get_args(KeepPolicy):
        raise ValueError(f"keep is {keep!r}; allowed: {', '.join(get_args(KeepPolicy))}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {embeddings.shape}")
    if embeddings.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numeric, got dtype {embeddings.dtype}")
    n = embeddings.shape[0]
    k = auto_clusters(n) if n_clusters is None else n_clusters
    if n and not 1 <= k <= n:
        raise ValueError(
            f"n_clusters is {n_clusters!r}; it must lie between 1 and the number of records ({n})"
        )
    if n == 0:
        return DedupResult(kept=[], removed=[], threshold=threshold, n=0, keep=keep)

    if k == 1:
        total = np.zeros(embeddings.shape[1], dtype=np.float64)
        for s in range(0, n, 16_384):
            total += unit_block(embeddings[s : s + 16_384]).sum(axis=0)
        norm = np.linalg.norm(total)
        centroid = (total / norm if norm > 0 else total).astype(np.float32)[None, :]
        assignment = assign(embeddings, centroid)
    else:
        assignment = assign(embeddings, fit_centroids(embeddings, k, seed=seed))
    rank = _ranks(keep, assignment.similarity, seed)
    nn = np.full(n, np.nan, dtype=np.float32) if nearest_neighbours else None

    removed: list[RemovedItem] = []
    for members in _groups(assignment.label, rank, np.arange(n)):
        _dedup_group(embeddings, members, threshold, removed, nn)
    first_pass = len(removed)
    if boundary_pass and k > 1:
        alive = np.ones(n, dtype=bool)
        alive[[r.index for r in removed]] = False
        survivors = np.flatnonzero(alive)
        low = np.minimum(assignment.label, assignment.second).astype(np.int64)
        high = np.maximum(assignment.label, assignment.second).astype(np.int64)
        pair = (low * k + high)[survivors]
        for members in _groups(pair, rank, survivors):
            _dedup_group(embeddings, members, threshold, removed)

    removed.sort(key=lambda item: item.index)
    gone = np.zeros(n, dtype=bool)
    gone[[r.index for r in removed]] = True
    return DedupResult(
        kept=np.flatnonzero(~gone).tolist(),
        removed=removed,
        threshold=threshold,
        n=n,
        n_clusters=k,
        keep=keep,
        removed_in_boundary_pass=len(removed) - first_pass,
        nn_similarity=nn,
    )


def exact_semdedup(
    embeddings: np.ndarray, threshold: float = 0.95, *, order: np.ndarray | None = None
) -> DedupResult:
    """The same rule over all pairs (blocked, O(n²·d) time, O(n·d) memory): the reference k-means is measured against.

    `order` lists the row indices best rank first (default: file order, i.e. the `earliest` policy)."""
    n = embeddings.shape[0]
    members = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    removed: list[RemovedItem] = []
    if n:
        _dedup_group(embeddings, members, threshold, removed)
    removed.sort(key=lambda item: item.index)
    gone = np.zeros(n, dtype=bool)
    gone[[r.index for r in removed]] = True
    return DedupResult(kept=np.flatnonzero(~gone).tolist(), removed=removed, threshold=threshold, n=n)


def brute_force_semdedup(embeddings: np.ndarray, threshold: float = 0.95) -> DedupResult:
    """Reference implementation of the rule in file order, all pairs in float64 (O(n²); for tests of small sets)."""
    e = unit_block(np.asarray(embeddings)).astype(np.float64)
    kept: list[int] = []
    removed: list[RemovedItem] = []
    for i in range(e.shape[0]):
        best_sim, best_idx = -np.inf, -1
        for j in kept:
            s = float(np.dot(e[i], e[j]))
            if s > best_sim:
                best_sim, best_idx = s, j
        if best_sim > threshold:
            removed.append(RemovedItem(index=i, kept_index=best_idx, similarity=best_sim))
        else:
            kept.append(i)
    return DedupResult(kept=kept, removed=removed, threshold=threshold, n=e.shape[0])
