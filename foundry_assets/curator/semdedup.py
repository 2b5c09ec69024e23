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

Where it is exact and where not. Pairs are compared only where k-means says they could be close (the paper's trade:
O(n²·d / k) work instead of O(n²·d)). Plain SemDeDup compares a record only with its own cluster, so two near-copies
on either side of a cluster boundary are never compared (18% of the duplicates in the benchmark's 384-d mixture). Here
every record is owned by its nearest centroid and also *probes* up to `probes - 1` next-nearest ones whose centroid
cosine is within `probe_margin` of the nearest (multi-probe, as in IVF search): a pair is a candidate when either
record probes the other's cluster. Near-copies have almost the same similarity to every centroid (within
|a − b| ≤ √(2(1 − t)) of each other, usually far closer), so the cluster of one is nearly always among the few nearest
of the other; `benchmarks/bench_curator.py` measures the recall against exact search.

The keep decisions are then taken globally, in rank order, over the candidate pairs: record i is removed when one of
its candidates of better rank is kept. That is the exact-search greedy order, whatever order the clusters are scanned
in, so whenever every pair above the threshold is a candidate the result is identical to `exact_semdedup` (same kept
set, same kept_index and similarity for every removed record). A missed pair keeps a record that exact search removes,
which may then remove one that exact search keeps: precision < 1 only ever follows a recall < 1. With one cluster
(the default below `CLUSTER_SIZE` records) every pair is a candidate: the result is exact.

The clusters, their probes and the candidate pairs live in `candidates` (with the memory bounds); the rank order pass
over the pairs, and the exact search's greedy, in `greedy`.
"""

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from foundry_assets.curator.candidates import Probes, cluster, cosines
from foundry_assets.curator.greedy import RemovedItem, dedup_group, settle
from foundry_assets.curator.kmeans import unit_block

KeepPolicy = Literal["earliest", "hard", "easy", "random"]
CLUSTER_SIZE = 1_000
"""Automatic cluster count: ceil(n / CLUSTER_SIZE), so a drop below this size is one cluster (exact search)."""
DEFAULT_PROBES = 8
"""Most clusters a record is compared in (its nearest and the next nearest ones). Chosen by measurement against exact
search on the benchmark's 20k/100k sets (see benchmarks/RESULTS.md): the 2 / 3 / 4 nearest give recall 0.97 / 0.99 /
0.997; up to 8 within `DEFAULT_PROBE_MARGIN` give the exact result at 3.1-3.6 probes per record (1.1 at 1M)."""
DEFAULT_PROBE_MARGIN = 0.04
"""A further cluster is probed only when the record's cosine to its centroid is within this of the nearest one's.
Near-copies split by a boundary differ there by at most |a - b|·|c1 - c2| (≈ 0.3 at threshold 0.95), in practice far
less (≤ 0.028 on the benchmark's 100k set); raise it for data whose duplicates straddle boundaries more widely."""


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
    probe_margin: float = field(default=0.0, compare=False)
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
            "probe_margin": self.probe_margin,
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

    Each record is compared with the records of its nearest cluster and of up to `probes - 1` next-nearest ones
    whose centroid cosine is within `probe_margin` of the nearest's (defaults `DEFAULT_PROBES`,
    `DEFAULT_PROBE_MARGIN`; `probe_margin=2.0` probes the `probes` nearest whatever their distance);
    `boundary_pass=False` is the plain paper setting, one cluster per record (`probes=1`)."""
    _check_arguments(embeddings, threshold, keep, probes, probe_margin)
    margin = DEFAULT_PROBE_MARGIN if probe_margin is None else probe_margin
    n = embeddings.shape[0]
    k = auto_clusters(n) if n_clusters is None else n_clusters
    if n and not 1 <= k <= n:
        raise ValueError(
            f"n_clusters is {n_clusters!r}; it must lie between 1 and the number of records ({n})"
        )
    if n == 0:
        return DedupResult(kept=[], removed=[], threshold=threshold, n=0, keep=keep)
    p = min((DEFAULT_PROBES if probes is None else probes) if boundary_pass else 1, k)
    assignment = cluster(embeddings, k, p, seed)
    rank = _ranks(keep, assignment.similarity, seed)
    nn = np.full(n, np.nan, dtype=np.float32) if nearest_neighbours else None
    probing = Probes.build(assignment, rank, k, margin)
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
        probe_margin=margin,
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
