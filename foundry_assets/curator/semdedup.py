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

Exact by construction. Pairs are compared only where k-means says they could be close (the paper's trade: far less
work than all n² pairs). Plain SemDeDup compares a record only with its own cluster, so two near-copies on either side
of a cluster boundary are never compared (18% of the duplicates in the benchmark's 384-d mixture). Here every record
is owned by its nearest centroid and also *probes* every further cluster a near-copy of it could be owned by; a pair
is a candidate when either record probes the other's cluster. The bound: for unit x and y with cos(x, y) > t,
|x − y| < δ = √(2(1 − t)). If x is owned by centroid A and y by B, x lies on A's side of the hyperplane halfway
between A and B and y on B's, so their distances to it add up to at most |x − y| < δ and one of them is within δ/2.
That distance is (cos(x, A) − cos(x, B)) / |A − B|, which every record computes for every centroid from the
similarities k-means assigns it with (`kmeans.assign`, `reach`). A record probes each cluster within δ/2 (about
0.158 at t = 0.95, in cosine terms 0.158·|A − B|): every pair above the threshold is then a candidate, whatever the
data, the centroids or the cluster count. Tight clusters cost about one probe; a drop whose centroids crowd
together (templated text) pays more probes for its exactness (`benchmarks/RESULTS.md`). `probe_margin` (a fixed
cosine margin, the earlier heuristic) and `probes` (a cap) trade exactness for speed; `probes=1` is plain SemDeDup.

The keep decisions are then taken globally, in rank order, over the candidate pairs: record i is removed when one of
its candidates of better rank is kept. That is the exact-search greedy order, whatever order the clusters are scanned
in, so with every pair above the threshold a candidate the result is identical to `exact_semdedup` (same kept set,
same kept_index and similarity for every removed record). With a margin or a cap, a missed pair keeps a record that
exact search removes, which may then remove one that exact search keeps: precision < 1 only follows a recall < 1.

The clusters, their probes and the candidate pairs live in `candidates` (with the memory bounds); the rank order pass
over the pairs, and the exact search's greedy, in `greedy`.
"""

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from foundry_assets.curator.candidates import SLACK, Probes, cluster, cosines
from foundry_assets.curator.greedy import RemovedItem, dedup_group, settle
from foundry_assets.curator.kmeans import unit_block

KeepPolicy = Literal["earliest", "hard", "easy", "random"]
CLUSTER_SIZE = 1_000
"""Automatic cluster count: ceil(n / CLUSTER_SIZE), so a drop below this size is one cluster (exact search)."""


def reach(threshold: float) -> float:
    """How far (distance to the halfway hyperplane between two centroids) a record probes: δ/2 with
    δ = √(2(1 − t)), t lowered by the candidates' `SLACK` so that rounding never loses a pair at the threshold."""
    return math.sqrt(2.0 * max(0.0, 1.0 - threshold + SLACK)) / 2.0


@dataclass
class DedupResult:
    """Indices kept (ascending), what was removed and why, the settings, and each record's nearest-neighbour cosine
    among the records it was compared with (NaN for a record compared with none; None when not computed).

    `removed_in_boundary_pass` counts the removed records whose kept duplicate lies in another (nearest) cluster:
    the pairs that plain one-cluster SemDeDup misses and the extra probes find."""

    kept: list[int]
    removed: list[RemovedItem]
    threshold: float
    n: int = 0
    n_clusters: int = 1
    keep: str = "earliest"
    removed_in_boundary_pass: int = 0
    probes: int = field(default=1, compare=False)
    probe_margin: float | None = field(default=None, compare=False)
    mean_probes: float = field(default=1.0, compare=False)
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
            "probes": self.probes,
            "probe_rule": "exact" if self.probe_margin is None else f"margin {self.probe_margin:g}",
            "mean_probes": round(self.mean_probes, 3),
        }


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


def _check_arguments(
    embeddings: np.ndarray, threshold: float, keep: str, probes: int | None, probe_margin: float | None
) -> None:
    """Refuse settings `semdedup` cannot honour, naming the argument, the bad value and what is allowed."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is {threshold!r}; a cosine threshold lies in [-1, 1] (e.g. 0.95)")
    if keep not in get_args(KeepPolicy):
        raise ValueError(f"keep is {keep!r}; allowed: {', '.join(get_args(KeepPolicy))}")
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {embeddings.shape}")
    if embeddings.dtype.kind not in "fiu":
        raise ValueError(f"embeddings must be numeric, got dtype {embeddings.dtype}")
    if probes is not None and probes < 1:
        raise ValueError(f"probes is {probes!r}; it must be a positive integer (1 = own cluster only)")
    if probe_margin is not None and not probe_margin >= 0:
        raise ValueError(f"probe_margin is {probe_margin!r}; it must be a cosine difference >= 0 (e.g. 0.03)")


def semdedup(
    embeddings: np.ndarray,
    threshold: float = 0.95,
    *,
    n_clusters: int | None = None,
    keep: KeepPolicy = "earliest",
    seed: int = 0,
    boundary_pass: bool = True,
    nearest_neighbours: bool = True,
    probes: int | None = None,
    probe_margin: float | None = None,
) -> DedupResult:
    """SemDeDup: cluster, then remove records with cosine > threshold to a better-ranked kept record.

    By default each record is compared in its own cluster and every further one a near-copy could be owned by
    (`reach`): the result is exact search's. `probe_margin` instead probes the clusters whose centroid cosine is
    within that margin of the nearest's, `probes` caps the clusters per record (the nearest kept); both may miss
    pairs. `boundary_pass=False` is the plain paper setting, one cluster per record (`probes=1`)."""
    _check_arguments(embeddings, threshold, keep, probes, probe_margin)
    n = embeddings.shape[0]
    k = auto_clusters(n) if n_clusters is None else n_clusters
    if n and not 1 <= k <= n:
        raise ValueError(
            f"n_clusters is {n_clusters!r}; it must lie between 1 and the number of records ({n})"
        )
    if n == 0:
        return DedupResult(kept=[], removed=[], threshold=threshold, n=0, keep=keep)
    p = min((k if probes is None else probes) if boundary_pass else 1, k)
    bound = reach(threshold) if probe_margin is None else None
    assignment = cluster(embeddings, k, seed, reach=bound, margin=probe_margin, probes=p)
    rank = _ranks(keep, assignment.similarity, seed)
    nn = np.full(n, np.nan, dtype=np.float32) if nearest_neighbours else None
    probing = Probes.build(assignment, rank, k)
    pairs = probing.pairs(embeddings, rank, threshold, nn)
    removed = settle(embeddings, pairs, rank, threshold, probing.candidates)
    removed.sort(key=lambda item: item.index)
    gone = np.zeros(n, dtype=bool)
    gone[[r.index for r in removed]] = True
    if nn is not None:
        nn[np.isneginf(nn)] = np.nan
    label = assignment.label
    return DedupResult(
        kept=np.flatnonzero(~gone).tolist(),
        removed=removed,
        threshold=threshold,
        n=n,
        n_clusters=k,
        keep=keep,
        removed_in_boundary_pass=sum(int(label[r.index] != label[r.kept_index]) for r in removed),
        nn_similarity=nn,
        probes=p,
        probe_margin=probe_margin,
        mean_probes=probing.mean_probes,
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
        dedup_group(embeddings, members, threshold, removed)
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
            s = float(cosines(e[i : i + 1], e[j : j + 1])[0])
            if s > best_sim:
                best_sim, best_idx = s, j
        if best_sim > threshold:
            removed.append(RemovedItem(index=i, kept_index=best_idx, similarity=best_sim))
        else:
            kept.append(i)
    return DedupResult(kept=kept, removed=removed, threshold=threshold, n=e.shape[0])
