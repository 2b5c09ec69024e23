"""The candidate pairs: the result does not depend on the block size the clusters are compared in."""

import numpy as np
import pytest

from foundry_assets.curator import candidates
from foundry_assets.curator.semdedup import semdedup
from foundry_assets_tests.curator.synthetic import clustered


def test_multi_probe_is_deterministic_and_block_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    e, _ = clustered(2500, 250, 32, seed=2)
    for keep in ("earliest", "hard", "easy", "random"):
        first = semdedup(e, 0.95, n_clusters=7, keep=keep, seed=5)  # type: ignore[arg-type]
        again = semdedup(e.copy(), 0.95, n_clusters=7, keep=keep, seed=5)  # type: ignore[arg-type]
        assert again == first and again.removed == first.removed
        assert np.array_equal(again.nn_similarity, first.nn_similarity, equal_nan=True)  # type: ignore[arg-type]
    reference = semdedup(e, 0.95, n_clusters=7)
    monkeypatch.setattr(candidates, "MAX_BLOCK_CELLS", 5_000)  # many small blocks
    assert semdedup(e, 0.95, n_clusters=7) == reference
