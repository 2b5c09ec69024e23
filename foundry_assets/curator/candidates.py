"""Which records SemDeDup compares, and the pairs above the threshold among them (the module `semdedup` explains why).

Clusters: k-means centroids (one mean direction when k = 1), every record owned by its nearest centroid and probing
the further ones a near-copy of it could be owned by (`kmeans.assign`, `Probes`). Pairs: the owners of a cluster among themselves, and the records
probing the cluster against its owners (`Probes.pairs`), screened a block at a time.

Memory: O(n·p + k·d) besides the input, which may be a float16/float32 memory map, plus the candidate pairs above the
threshold. A cluster and its probing records are copied as float32 while they are compared and their similarities are
computed a block of rows at a time (at most `MAX_BLOCK_CELLS` floats), never as an n×n matrix. A record with more than
`MAX_EDGES` better-ranked near-copies in one block (a huge group of copies) keeps no pairs; it is settled in the rank
order pass by recomputing its similarities to its candidates, so the pair list stays O(n). The float32 block products
only pick candidates (within `SLACK` of the threshold); each candidate's similarity is recomputed in float64 from the
two vectors, so the result does not depend on the block size or the cluster layout.
"""

from dataclasses import dataclass

import numpy as np

from foundry_assets.curator.kmeans import Assignment, assign, fit_centroids, unit_block

SLACK = 1e-4
"""Candidate margin for the float32 block products; far above their rounding error (~1e-6 for unit vectors)."""
MAX_BLOCK_CELLS = 1 << 24
"""Most float32 similarities computed at once (a block of rows × a cluster)."""
MAX_EDGES = 64
"""Better-ranked near-copies kept per record and block; a record with more is settled by recomputation instead."""
_MEAN_BLOCK = 16_384


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise float64 dot products of unit rows (b may be one row, broadcast). One formula everywhere, so k-means
    SemDeDup, exact search and the reference report bit-identical similarities."""
    a64 = a.astype(np.float64)
    b64 = np.broadcast_to(b.astype(np.float64), a64.shape)
    return np.asarray(np.einsum("ij,ij->i", a64, b64))


def cluster(
    embeddings: np.ndarray, k: int, seed: int, *, reach: float | None, margin: float | None, probes: int
) -> Assignment:
    """k centroids, every record's nearest and the further ones it probes (`kmeans.assign`); one cluster is the
    records' mean direction (no k-means)."""
    if k > 1:
        centroids = fit_centroids(embeddings, k, seed=seed)
        return assign(embeddings, centroids, reach=reach, margin=margin, probes=probes)
    total = np.zeros(embeddings.shape[1], dtype=np.float64)
    for s in range(0, embeddings.shape[0], _MEAN_BLOCK):
        total += unit_block(embeddings[s : s + _MEAN_BLOCK]).sum(axis=0)
    norm = np.linalg.norm(total)
    centroid = (total / norm if norm > 0 else total).astype(np.float32)[None, :]
    return assign(embeddings, centroid)


class Pairs:
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
        exact = cosines(xa, xb)
        keep = exact > self.threshold
        a_rows, b_rows, exact = a_rows[keep], b_rows[keep], exact[keep]
        swap = self.rank[a_rows] < self.rank[b_rows]
        later = np.where(swap, b_rows, a_rows)
        earlier = np.where(swap, a_rows, b_rows)
        if later.size > MAX_EDGES:
            rows, counts = np.unique(later, return_counts=True)
            crowded = rows[counts > MAX_EDGES]
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
    pairs: Pairs,
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
    pairs: Pairs,
    nn_out: np.ndarray | None,
) -> None:
    """All pairs among `owners` (sorted best rank first) and between `probers` and `owners`, a block at a time."""
    m = owners.size
    xo = unit_block(e[owners])
    step = max(1, min(m, MAX_BLOCK_CELLS // max(m, 1)))
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


@dataclass(frozen=True)
class Probes:
    """Where every record is compared: the owners of each cluster and the records probing it (each grouped by cluster,
    best rank first, CSR layout), from the assignment's probes."""

    assignment: Assignment
    owners: np.ndarray
    owner_bounds: np.ndarray
    probers: np.ndarray
    prober_bounds: np.ndarray

    @classmethod
    def build(cls, assignment: Assignment, rank: np.ndarray, k: int) -> "Probes":
        """Group the records by the cluster they own and by each further cluster they probe."""
        everyone = np.arange(rank.size)
        owners, owner_bounds = _by_cluster(assignment.label.astype(np.int64), everyone, rank, k)
        extra_rows = np.repeat(everyone, np.diff(assignment.probe_bounds))
        probers, prober_bounds = _by_cluster(assignment.probe_clusters.astype(np.int64), extra_rows, rank, k)
        return cls(assignment, owners, owner_bounds, probers, prober_bounds)

    @property
    def mean_probes(self) -> float:
        """Clusters a record is compared in, on average (1 = its own cluster only)."""
        return 1.0 + self.assignment.probe_clusters.size / max(self.assignment.label.size, 1)

    def _owners_of(self, c: int) -> np.ndarray:
        return self.owners[self.owner_bounds[c] : self.owner_bounds[c + 1]]

    def _probers_of(self, c: int) -> np.ndarray:
        return self.probers[self.prober_bounds[c] : self.prober_bounds[c + 1]]

    def pairs(self, e: np.ndarray, rank: np.ndarray, threshold: float, nn_out: np.ndarray | None) -> Pairs:
        """The candidate pairs above `threshold`, cluster by cluster; `nn_out` gets each record's nearest cosine."""
        pairs = Pairs(rank.size, rank, threshold)
        cut = threshold - SLACK
        for c in range(self.owner_bounds.size - 1):
            members = self._owners_of(c)
            if members.size:
                _compare_cluster(e, members, self._probers_of(c), cut, pairs, nn_out)
        return pairs

    def candidates(self, i: int) -> np.ndarray:
        """Every record paired with i: the owners of the clusters i owns and probes, and the records probing i's
        cluster."""
        a = self.assignment
        clusters = [int(a.label[i]), *a.probe_clusters[a.probe_bounds[i] : a.probe_bounds[i + 1]].tolist()]
        parts = [self._owners_of(c) for c in clusters]
        parts.append(self._probers_of(int(a.label[i])))
        return np.unique(np.concatenate(parts))
