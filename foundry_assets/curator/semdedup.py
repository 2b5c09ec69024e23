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
which may then remove one that exact search keeps: precision < 1 only ever follows a recall < 1. With one cluster (the default below `CLUSTER_SIZE` records) every pair is a candidate: the result is exact.

Memory: O(n·p + k·d) besides the input, which may be a float16/float32 memory map, plus the candidate pairs above the
threshold. A cluster and its probing records are copied as float32 while they are compared and their similarities are
computed a block of rows at a time (at most `_MAX_BLOCK_CELLS` floats), never as an n×n matrix. A record with more than
`_MAX_EDGES` better-ranked near-copies in one block (a huge group of copies) keeps no pairs; it is settled in the rank
order pass by recomputing its similarities to its candidates, so the pair list stays O(n). The float32 block products
only pick candidates (within `_SLACK` of the threshold); each candidate's similarity is recomputed in float64 from the
two vectors, so the result does not depend on the block size or the cluster layout.
"""

import math
from collections.abc import Callable
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
DEFAULT_PROBES = 8
"""Most clusters a record is compared in (its nearest and the next nearest ones). Chosen by measurement against exact
search on the benchmark's 20k/100k sets (see benchmarks/RESULTS.md): the 2 / 3 / 4 nearest give recall 0.97 / 0.99 /
0.997; up to 8 within `DEFAULT_PROBE_MARGIN` give the exact result at 3.1-3.6 probes per record (1.1 at 1M)."""
DEFAULT_PROBE_MARGIN = 0.04
"""A further cluster is probed only when the record's cosine to its centroid is within this of the nearest one's.
Near-copies split by a boundary differ there by at most |a - b|·|c1 - c2| (≈ 0.3 at threshold 0.95), in practice far
less (≤ 0.028 on the benchmark's 100k set); raise it for data whose duplicates straddle boundaries more widely."""
_MAX_EDGES = 64
"""Better-ranked near-copies kept per record and block; a record with more is settled by recomputation instead."""


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise float64 dot products of unit rows (b may be one row, broadcast). One formula everywhere, so k-means
    SemDeDup, exact search and the reference report bit-identical similarities."""
    a64 = a.astype(np.float64)
    b64 = np.broadcast_to(b.astype(np.float64), a64.shape)
    return np.asarray(np.einsum("ij,ij->i", a64, b64))


@dataclass(frozen=True)
class RemovedItem:
    """A removed record: its index, the kept record it duplicates and their cosine similarity."""

    index: int
    kept_index: int
    similarity: float


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
                exact = _cosines(x[s + r], x[cols])
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
                exact = _cosines(x[s + cols], x[s + row][None, :])
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


class _Pairs:
    """Candidate pairs above the threshold: (record, better-ranked record, float64 cosine), and the records that had
    too many of them in one block (`overflow`: settled later by recomputation, their pairs dropped)."""

    def __init__(self, n: int, rank: np.ndarray, threshold: float) -> None:
        self.rank = rank
        self.threshold = threshold
        self.later: list[np.ndarray] = []
        self.earlier: list[np.ndarray] = []
        self.sims: list[np.ndarray] = []
        self.overflow = np.zeros(n, dtype=bool)

    def add(self, a_rows: np.ndarray, b_rows: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> None:
        """Screened pairs (global indices a_rows[i], b_rows[i] with unit float32 vectors xa[i], xb[i])."""
        if a_rows.size == 0:
            return
        exact = _cosines(xa, xb)
        keep = exact > self.threshold
        a_rows, b_rows, exact = a_rows[keep], b_rows[keep], exact[keep]
        swap = self.rank[a_rows] < self.rank[b_rows]
        later = np.where(swap, b_rows, a_rows)
        earlier = np.where(swap, a_rows, b_rows)
        if later.size > _MAX_EDGES:
            rows, counts = np.unique(later, return_counts=True)
            crowded = rows[counts > _MAX_EDGES]
            if crowded.size:
                self.overflow[crowded] = True
                fine = ~np.isin(later, crowded)
                later, earlier, exact = later[fine], earlier[fine], exact[fine]
        self.later.append(later)
        self.earlier.append(earlier)
        self.sims.append(exact)


def _screen(
    sims: np.ndarray,
    cut: float,
    rows: np.ndarray,
    cols: np.ndarray,
    xr: np.ndarray,
    xc: np.ndarray,
    pairs: _Pairs,
    nn_out: np.ndarray | None,
) -> None:
    """Pairs of one block of similarities above `cut` (rows first screened by their maximum), and the NN update."""
    row_max = sims.max(axis=1)
    if nn_out is not None:
        nn_out[rows] = np.fmax(nn_out[rows], row_max)
        nn_out[cols] = np.fmax(nn_out[cols], sims.max(axis=0))
    hot = np.flatnonzero(row_max > cut)
    if hot.size:
        r, c = np.nonzero(sims[hot] > cut)
        r = hot[r]
        pairs.add(rows[r], cols[c], xr[r], xc[c])


def _compare_cluster(
    e: np.ndarray,
    owners: np.ndarray,
    probers: np.ndarray,
    cut: float,
    pairs: _Pairs,
    nn_out: np.ndarray | None,
) -> None:
    """All pairs among `owners` (sorted best rank first) and between `probers` and `owners`, a block at a time."""
    m = owners.size
    xo = unit_block(e[owners])
    step = max(1, min(m, _MAX_BLOCK_CELLS // max(m, 1)))
    for s in range(0, m, step):  # owners × better-ranked owners: the lower triangle
        t = min(s + step, m)
        sims = xo[s:t] @ xo[:t].T
        np.copyto(sims[:, s:t], -np.inf, where=~np.tri(t - s, k=-1, dtype=bool))
        _screen(sims, cut, owners[s:t], owners[:t], xo[s:t], xo[:t], pairs, nn_out)
    if probers.size == 0:
        return
    xp = unit_block(e[probers])
    for s in range(0, probers.size, step):  # records probing this cluster × its owners
        t = min(s + step, probers.size)
        _screen(xp[s:t] @ xo.T, cut, probers[s:t], owners, xp[s:t], xo, pairs, nn_out)


def _by_cluster(
    keys: np.ndarray, rows: np.ndarray, rank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """`rows` grouped by key (each group best rank first) and the group boundaries (CSR layout, k + 1 offsets)."""
    order = np.lexsort((rank[rows], keys))
    bounds = np.searchsorted(keys[order], np.arange(k + 1))
    return rows[order], bounds


def _settle(
    e: np.ndarray,
    pairs: _Pairs,
    rank: np.ndarray,
    threshold: float,
    candidates: Callable[[int], np.ndarray],
) -> list[RemovedItem]:
    """The greedy rule in rank order over the candidate pairs (exact search's order, whatever the cluster order)."""
    n = rank.size
    later = np.concatenate(pairs.later) if pairs.later else np.zeros(0, dtype=np.int64)
    earlier = np.concatenate(pairs.earlier) if pairs.earlier else np.zeros(0, dtype=np.int64)
    sims = np.concatenate(pairs.sims) if pairs.sims else np.zeros(0)
    fine = ~pairs.overflow[later]
    later, earlier, sims = later[fine], earlier[fine], sims[fine]
    # the same pair may come from two clusters (each record probing the other's): keep one copy
    key = later.astype(np.int64) * n + earlier
    key, first = np.unique(key, return_index=True)
    later, earlier, sims = later[first], earlier[first], sims[first]
    # per record: most similar first, ties → better rank
    order = np.lexsort((rank[earlier], -sims, rank[later]))
    later, earlier, sims = later[order], earlier[order], sims[order]
    heads = (
        np.flatnonzero(np.r_[True, later[1:] != later[:-1]]) if later.size else np.zeros(0, dtype=np.int64)
    )
    rows = later[heads]
    crowded = np.flatnonzero(pairs.overflow)
    todo = np.concatenate([rows, crowded])
    starts = np.concatenate([heads, np.full(crowded.size, -1)])
    ends = np.concatenate([np.r_[heads[1:], later.size], np.full(crowded.size, -1)]).astype(np.int64)
    sequence = np.argsort(rank[todo], kind="stable")
    kept = np.ones(n, dtype=bool)
    removed: list[RemovedItem] = []
    earlier_list, sims_list = earlier.tolist(), sims.tolist()
    for i, a, b in zip(
        todo[sequence].tolist(), starts[sequence].tolist(), ends[sequence].tolist(), strict=True
    ):
        if a < 0:  # too many near-copies to keep their pairs: recompute against the kept candidates
            cand = candidates(i)
            cand = cand[(rank[cand] < rank[i]) & kept[cand]]
            if cand.size == 0:
                continue
            xi = unit_block(e[i : i + 1])[0]
            xc = unit_block(e[cand])
            close = np.flatnonzero(xc @ xi > threshold - _SLACK)
            if close.size == 0:
                continue
            exact = _cosines(xc[close], xi[None, :])
            j = np.lexsort((rank[cand[close]], -exact))[0]
            if exact[j] > threshold:
                kept[i] = False
                removed.append(
                    RemovedItem(index=i, kept_index=int(cand[close[j]]), similarity=float(exact[j]))
                )
            continue
        for p in range(a, b):
            j = earlier_list[p]
            if kept[j]:
                kept[i] = False
                removed.append(RemovedItem(index=i, kept_index=j, similarity=sims_list[p]))
                break
    return removed


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
    margin = DEFAULT_PROBE_MARGIN if probe_margin is None else probe_margin
    n = embeddings.shape[0]
    k = auto_clusters(n) if n_clusters is None else n_clusters
    if n and not 1 <= k <= n:
        raise ValueError(
            f"n_clusters is {n_clusters!r}; it must lie between 1 and the number of records ({n})"
        )
    if n == 0:
        return DedupResult(kept=[], removed=[], threshold=threshold, n=0, keep=keep)
    p = (DEFAULT_PROBES if probes is None else probes) if boundary_pass else 1
    p = min(p, k)

    if k == 1:
        total = np.zeros(embeddings.shape[1], dtype=np.float64)
        for s in range(0, n, 16_384):
            total += unit_block(embeddings[s : s + 16_384]).sum(axis=0)
        norm = np.linalg.norm(total)
        centroid = (total / norm if norm > 0 else total).astype(np.float32)[None, :]
        assignment = assign(embeddings, centroid, 1)
    else:
        assignment = assign(embeddings, fit_centroids(embeddings, k, seed=seed), p)
    rank = _ranks(keep, assignment.similarity, seed)
    nn = np.full(n, np.nan, dtype=np.float32) if nearest_neighbours else None

    everyone = np.arange(n)
    owners, owner_bounds = _by_cluster(assignment.label.astype(np.int64), everyone, rank, k)
    # the further clusters each record probes: within `margin` of its nearest (a boolean mask over `nearest`)
    probed = assignment.nearest_similarity >= assignment.nearest_similarity[:, :1] - np.float32(margin)
    probed[:, 0] = True
    extra_rows, extra_col = np.nonzero(probed[:, 1:])
    probers, prober_bounds = _by_cluster(
        assignment.nearest[extra_rows, extra_col + 1].astype(np.int64), extra_rows, rank, k
    )
    pairs = _Pairs(n, rank, threshold)
    cut = threshold - _SLACK
    for c in range(k):
        members = owners[owner_bounds[c] : owner_bounds[c + 1]]
        if members.size:
            _compare_cluster(
                embeddings, members, probers[prober_bounds[c] : prober_bounds[c + 1]], cut, pairs, nn
            )

    def candidates(i: int) -> np.ndarray:
        """Every record paired with i: the owners of the clusters i probes, and the records probing i's cluster."""
        clusters = assignment.nearest[i][probed[i]].tolist()
        parts = [owners[owner_bounds[c] : owner_bounds[c + 1]] for c in clusters]
        c = int(assignment.label[i])
        parts.append(probers[prober_bounds[c] : prober_bounds[c + 1]])
        return np.unique(np.concatenate(parts))

    removed = _settle(embeddings, pairs, rank, threshold, candidates)
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
        mean_probes=float(probed.sum()) / n,
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
            s = float(_cosines(e[i : i + 1], e[j : j + 1])[0])
            if s > best_sim:
                best_sim, best_idx = s, j
        if best_sim > threshold:
            removed.append(RemovedItem(index=i, kept_index=best_idx, similarity=best_sim))
        else:
            kept.append(i)
    return DedupResult(kept=kept, removed=removed, threshold=threshold, n=e.shape[0])
