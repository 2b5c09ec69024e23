"""SemDeDup's keep rule taken in rank order: a record is removed when a better-ranked KEPT record is above the threshold.

`settle` applies it over the candidate pairs the clusters found (the k-means path), `dedup_group` over every pair of
one group (exact search). Both visit records best rank first, so each group of near-copies keeps its best-ranked
member whatever order the pairs were found in.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from foundry_assets.curator.candidates import MAX_BLOCK_CELLS, SLACK, Pairs, cosines
from foundry_assets.curator.kmeans import unit_block


@dataclass(frozen=True)
class RemovedItem:
    """A removed record: its index, the kept record it duplicates and their cosine similarity."""

    index: int
    kept_index: int
    similarity: float


def dedup_group(
    e: np.ndarray,
    members: np.ndarray,
    threshold: float,
    removed: list[RemovedItem],
    nn_out: np.ndarray | None = None,
) -> None:
    """The greedy rule over `members` (global row indices, best rank first); appends what it removes."""
    m = len(members)
    x = unit_block(e[members])
    cut = threshold - SLACK
    kept = np.zeros(m, dtype=bool)
    step = max(1, min(m, MAX_BLOCK_CELLS // max(m, 1)))
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
                exact = cosines(x[s + r], x[cols])
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
                exact = cosines(x[s + cols], x[s + row][None, :])
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


def _sorted_pairs(pairs: Pairs, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs as (later, earlier, cosine) arrays without overflowed records or repeats, grouped by the later
    record in rank order and, within a record, most similar first (ties → better rank)."""
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
    order = np.lexsort((rank[earlier], -sims, rank[later]))
    return later[order], earlier[order], sims[order]


def _recompute(
    e: np.ndarray, i: int, cand: np.ndarray, rank: np.ndarray, kept: np.ndarray, threshold: float
) -> RemovedItem | None:
    """Record i's removal (or None) from its similarities to its kept, better-ranked candidates, recomputed."""
    cand = cand[(rank[cand] < rank[i]) & kept[cand]]
    if cand.size == 0:
        return None
    xi = unit_block(e[i : i + 1])[0]
    xc = unit_block(e[cand])
    close = np.flatnonzero(xc @ xi > threshold - SLACK)
    if close.size == 0:
        return None
    exact = cosines(xc[close], xi[None, :])
    j = np.lexsort((rank[cand[close]], -exact))[0]
    if exact[j] > threshold:
        return RemovedItem(index=i, kept_index=int(cand[close[j]]), similarity=float(exact[j]))
    return None


def settle(
    e: np.ndarray,
    pairs: Pairs,
    rank: np.ndarray,
    threshold: float,
    candidates: Callable[[int], np.ndarray],
) -> list[RemovedItem]:
    """The greedy rule in rank order over the candidate pairs (exact search's order, whatever the cluster order)."""
    later, earlier, sims = _sorted_pairs(pairs, rank)
    heads = (
        np.flatnonzero(np.r_[True, later[1:] != later[:-1]]) if later.size else np.zeros(0, dtype=np.int64)
    )
    crowded = np.flatnonzero(pairs.overflow)
    todo = np.concatenate([later[heads], crowded])
    starts = np.concatenate([heads, np.full(crowded.size, -1)])
    ends = np.concatenate([np.r_[heads[1:], later.size], np.full(crowded.size, -1)]).astype(np.int64)
    sequence = np.argsort(rank[todo], kind="stable")
    kept = np.ones(rank.size, dtype=bool)
    removed: list[RemovedItem] = []
    earlier_list, sims_list = earlier.tolist(), sims.tolist()
    for i, a, b in zip(
        todo[sequence].tolist(), starts[sequence].tolist(), ends[sequence].tolist(), strict=True
    ):
        if a < 0:  # too many near-copies to keep their pairs: recompute against the kept candidates
            item = _recompute(e, i, candidates(i), rank, kept, threshold)
            if item is not None:
                kept[i] = False
                removed.append(item)
            continue
        for p in range(a, b):
            j = earlier_list[p]
            if kept[j]:
                kept[i] = False
                removed.append(RemovedItem(index=i, kept_index=j, similarity=sims_list[p]))
                break
    return removed
