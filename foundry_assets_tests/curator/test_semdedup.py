"""SemDeDup on synthetic embeddings: agreement with the all-pairs reference, block independence, the keep rule."""

from pathlib import Path

import numpy as np
import pytest

from foundry_assets.curator.greedy import RemovedItem
from foundry_assets.curator.semdedup import brute_force_semdedup, exact_semdedup, semdedup
from foundry_assets_tests.curator.synthetic import clustered


def planted(n_base: int, n_copies: int, dim: int, seed: int, noise: float = 0.05) -> np.ndarray:
    """Random unit vectors with near-copies of earlier rows planted at random later positions."""
    rng = np.random.default_rng(seed)
    rows = list(rng.standard_normal((n_base, dim)))
    for _ in range(n_copies):
        src = rows[int(rng.integers(len(rows)))]
        at = int(rng.integers(len(rows) + 1))
        rows.insert(at, src + noise * rng.standard_normal(dim) * rng.uniform(0.2, 2.0))
    e = np.asarray(rows, dtype=np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def naive_all_pairs(e: np.ndarray, threshold: float) -> tuple[list[int], list[tuple[int, int]]]:
    """The rule written independently with a full n×n float64 matrix (test sizes only)."""
    e64 = e.astype(np.float64)
    sims = e64 @ e64.T
    kept: list[int] = []
    pairs: list[tuple[int, int]] = []
    for i in range(len(e)):
        if kept and sims[i, kept].max() > threshold:
            pairs.append((i, kept[int(np.argmax(sims[i, kept]))]))
        else:
            kept.append(i)
    return kept, pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_cluster_agrees_with_all_pairs_greedy(seed: int) -> None:
    e = planted(n_base=180, n_copies=60, dim=24, seed=seed)
    reference = brute_force_semdedup(e, 0.95)
    result = semdedup(e, 0.95)  # 240 records < CLUSTER_SIZE: one cluster, exact
    assert result.n_clusters == 1
    assert result == reference  # identical kept, removed (indices and float64 similarities), threshold
    assert exact_semdedup(e, 0.95) == reference
    kept, pairs = naive_all_pairs(e, 0.95)
    assert result.kept == kept
    assert [(r.index, r.kept_index) for r in result.removed] == pairs
    assert (
        20 < len(result.removed) <= 60
    )  # most planted copies are caught (wide noise range lets a few through)
    assert len(result.kept) + len(result.removed) == len(e)


@pytest.mark.parametrize("keep", ["earliest", "hard", "easy", "random"])
def test_kmeans_dedup_agrees_with_exact_search_on_planted_duplicates(keep: str) -> None:
    e, planted_rows = clustered(3000, 300, 64, seed=5)
    result = semdedup(e, 0.95, n_clusters=12, keep=keep, seed=3)  # type: ignore[arg-type]
    removed = {r.index for r in result.removed}
    assert result.n_clusters == 12 and len(result.kept) + len(removed) == len(e)
    if keep == "earliest":
        exact_removed = {r.index for r in exact_semdedup(e, 0.95).removed}
        assert exact_removed == planted_rows
        assert removed <= exact_removed  # precision 1.0
        assert len(removed & exact_removed) >= 0.97 * len(exact_removed)  # recall
    # whatever the policy, one member of every planted pair survives and the removed point at a kept record
    assert len(removed) >= 0.97 * len(planted_rows)
    kept = set(result.kept)
    assert all(r.kept_index in kept and r.similarity > 0.95 for r in result.removed)


def test_keep_policies_pick_the_documented_survivor() -> None:
    near = np.array([1.0, 0.05, 0.0])  # closer to the centroid (the mean direction)
    far = np.array([1.0, 0.25, 0.1])  # farther, still cosine > 0.95 with `near`
    e = np.stack([far, near, np.array([1.0, -0.6, 0.3])]).astype(np.float32)
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert float(unit[0] @ unit[1]) > 0.95 and float((unit[:2] @ unit[2]).max()) < 0.95
    assert semdedup(e, 0.95, keep="earliest").kept == [0, 2]
    assert semdedup(e, 0.95, keep="hard").kept == [0, 2]  # the least prototypical survives
    assert semdedup(e, 0.95, keep="easy").kept == [1, 2]  # the most prototypical survives


def test_deterministic_for_a_seed_and_memory_mapped_float16(tmp_path: Path) -> None:
    e, _ = clustered(2500, 200, 32, seed=9)
    first = semdedup(e, 0.95, n_clusters=5, keep="random", seed=11)
    assert semdedup(e, 0.95, n_clusters=5, keep="random", seed=11) == first
    np.save(tmp_path / "e16.npy", e.astype(np.float16))
    mapped = np.load(tmp_path / "e16.npy", mmap_mode="r")
    half = semdedup(mapped, 0.95, n_clusters=5, seed=11)
    assert len(half.removed) == len(semdedup(e, 0.95, n_clusters=5, seed=11).removed)
    assert half.nn_similarity is not None and float(np.nanmax(half.nn_similarity)) > 0.95


def test_earliest_is_kept_and_points_at_most_similar_kept() -> None:
    base = np.eye(4, dtype=np.float32)
    a, b = base[0], base[1]
    near_a = a + 0.1 * b
    e = np.stack([a, base[2], near_a, a.copy(), base[3]])
    result = semdedup(e, 0.95)
    assert result.kept == [0, 1, 4]
    assert [(r.index, r.kept_index) for r in result.removed] == [(2, 0), (3, 0)]
    assert result.removed[1].similarity == pytest.approx(1.0)
    assert result.removed[0].similarity == pytest.approx(1 / np.sqrt(1.01), abs=1e-6)


def test_chain_is_compared_with_kept_records_only() -> None:
    # a≈b (0.96), b≈c (0.96), a·c ≈ 0.84 < 0.95: b goes, c stays because b is not kept
    angles = np.radians([0.0, 16.26, 32.52])
    e = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert e[0] @ e[1] > 0.95 and e[1] @ e[2] > 0.95 and e[0] @ e[2] < 0.95
    result = semdedup(e, 0.95)
    assert result.kept == [0, 2]
    [item] = result.removed
    assert (item.index, item.kept_index) == (1, 0)
    assert item.similarity == pytest.approx(float(e[0] @ e[1]))


def test_threshold_is_strict_and_inputs_are_normalised() -> None:
    e = np.array([[3.0, 0.0], [5.0, 0.0], [0.0, 2.0]])  # unnormalised; rows 0 and 1 have cosine exactly 1
    assert semdedup(e, 1.0).kept == [0, 1, 2]  # cosine > threshold, not >=
    assert semdedup(e, 0.999).kept == [0, 2]


def test_edge_cases_and_validation() -> None:
    empty = semdedup(np.zeros((0, 8), dtype=np.float32))
    assert (empty.kept, empty.removed) == ([], [])
    assert semdedup(np.zeros((3, 4))).kept == [0, 1, 2]  # zero vectors are similar to nothing
    with pytest.raises(ValueError, match="2-D"):
        semdedup(np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        semdedup(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="threshold"):
        semdedup(np.eye(2), 1.5)
    with pytest.raises(ValueError, match="keep"):
        semdedup(np.eye(2), keep="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_clusters"):
        semdedup(np.eye(2), n_clusters=3)


def straddling_pair(seed: int, nudge: float) -> tuple[np.ndarray, int, int]:
    """Two tight topics (around e0 and e1) plus a near-copy pair on their bisector, nudged by ±nudge·(e0 − e1) to
    opposite sides of it (the two k-means centroids sit near e0 and e1)."""
    rng = np.random.default_rng(seed)
    dim = 64
    e0, e1 = np.eye(dim)[0], np.eye(dim)[1]
    topic_a = e0 + 0.1 * rng.standard_normal((200, dim))
    topic_b = e1 + 0.1 * rng.standard_normal((200, dim))
    middle = (e0 + e1) / np.sqrt(2) + 0.1 * rng.standard_normal(dim) * (np.arange(dim) > 1)
    a_side = middle + nudge * (e0 - e1) + 0.01 * rng.standard_normal(dim)
    b_side = middle - nudge * (e0 - e1) + 0.01 * rng.standard_normal(dim)
    e = np.vstack([topic_a[:100], a_side, topic_b[:100], topic_a[100:], b_side, topic_b[100:]])
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32), 100, 301


@pytest.mark.parametrize(("nudge", "margin"), [(0.01, None), (0.04, 0.15)])
def test_pair_across_a_cluster_boundary_is_found(nudge: float, margin: float | None) -> None:
    from foundry_assets.curator.kmeans import assign, fit_centroids

    e, first, second = straddling_pair(seed=4, nudge=nudge)
    assert float(e[first] @ e[second]) > 0.96
    labels = assign(e, fit_centroids(e, 2, seed=0)).label
    assert labels[first] != labels[second]  # the pair really straddles the boundary
    plain = semdedup(e, 0.95, n_clusters=2, seed=0, probes=1)
    assert second not in {r.index for r in plain.removed}  # one cluster per record misses it
    # found by the default probes when the pair sits close to the boundary; a wider straddle needs a wider margin
    result = semdedup(e, 0.95, n_clusters=2, seed=0, probe_margin=margin)
    assert RemovedItem(second, first, pytest.approx(float(e[first] @ e[second]))) in result.removed
    assert result.removed_in_boundary_pass >= 1
    exact = exact_semdedup(e, 0.95)
    assert (result.kept, result.removed) == (exact.kept, exact.removed)


@pytest.mark.parametrize("nudge", [0.04, 0.08, 0.1])
def test_default_is_exact_for_a_pair_straddling_beyond_any_fixed_margin(nudge: float) -> None:
    from foundry_assets.curator.kmeans import fit_centroids

    e, first, second = straddling_pair(seed=4, nudge=nudge)
    assert float(e[first] @ e[second]) > 0.95
    centroid_sims = e[[first, second]] @ fit_centroids(e, 2, seed=0).T
    gaps = np.abs(centroid_sims[:, 0] - centroid_sims[:, 1])
    assert (gaps > 0.05).all()  # both sit further from the boundary than the old 0.04 probe margin reached
    result = semdedup(e, 0.95, n_clusters=2, seed=0)
    kept, pairs = naive_all_pairs(e, 0.95)  # exact search, written with numpy over the full matrix
    assert result.kept == kept and [(r.index, r.kept_index) for r in result.removed] == pairs
    assert (second, first) in pairs and result.mean_probes < 1.05  # only records near the boundary probe


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_default_equals_exact_search_where_clusters_crowd(seed: int) -> None:
    """Few dimensions and many clusters: boundaries everywhere, near-copies straddling them at every distance."""
    e = planted(1500, 900, 6, seed, noise=0.12)
    result = semdedup(e, 0.95, n_clusters=25, seed=seed)
    kept, pairs = naive_all_pairs(e, 0.95)
    assert result.kept == kept and [(r.index, r.kept_index) for r in result.removed] == pairs
    assert result.removed_in_boundary_pass > 0 and result.to_metadata()["probe_rule"] == "exact"
    heuristic = semdedup(e, 0.95, n_clusters=25, seed=seed, probe_margin=0.04)
    assert heuristic.kept != kept  # what the fixed margin missed here


def test_kmeans_result_equals_exact_search_when_all_pairs_are_candidates() -> None:
    e, _ = clustered(3000, 300, 64, seed=5)
    exact = exact_semdedup(e, 0.95)
    # every record probes every cluster: all pairs are candidates, so the greedy must give exact search's answer
    every = semdedup(e, 0.95, n_clusters=12, probes=12, probe_margin=2.0)
    assert (every.kept, every.removed) == (exact.kept, exact.removed)
    default = semdedup(e, 0.95, n_clusters=12)  # the default probes find every pair here too
    assert (default.kept, default.removed) == (exact.kept, exact.removed)
    assert default.removed_in_boundary_pass > 0


def test_probe_validation_and_metadata() -> None:
    e, _ = clustered(1200, 50, 16, seed=1)
    with pytest.raises(ValueError, match="probes"):
        semdedup(e, probes=0)
    with pytest.raises(ValueError, match="probe_margin"):
        semdedup(e, probe_margin=-0.1)
    meta = semdedup(e, 0.95, n_clusters=3).to_metadata()
    assert meta["probes"] == 3 and 1.0 <= float(meta["mean_probes"]) <= 3.0
