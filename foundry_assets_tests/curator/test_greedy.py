"""The rank order pass: a record with too many near-copies to keep their pairs is settled by recomputation."""

import numpy as np
import pytest

from foundry_assets.curator import candidates
from foundry_assets.curator.semdedup import exact_semdedup, semdedup


def test_huge_copy_groups_fall_back_to_recomputation(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    base = rng.standard_normal((400, 24))
    group = base[:1] + 0.004 * rng.standard_normal((120, 24))  # 121 mutual near-copies
    e = np.vstack([base, group])[rng.permutation(520)].astype(np.float32)
    monkeypatch.setattr(candidates, "MAX_EDGES", 3)  # nearly every copy overflows its pair list
    result, exact = semdedup(e, 0.95, n_clusters=4), exact_semdedup(e, 0.95)
    assert (result.kept, result.removed) == (exact.kept, exact.removed)
    assert len(result.removed) >= 120
