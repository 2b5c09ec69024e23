"""Synthetic embeddings shared by the SemDeDup tests."""

import numpy as np


def clustered(n: int, n_dups: int, dim: int, seed: int) -> tuple[np.ndarray, set[int]]:
    """A mixture of 40 topics with near-copies (cosine ≈ 0.97-0.99) of random rows appended; returns the copies."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    base = centers[rng.integers(0, 40, n)] + rng.standard_normal((n, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies = base[rng.integers(0, n, n_dups)] + 0.01 * rng.standard_normal((n_dups, dim))
    return np.vstack([base, copies]).astype(np.float32), set(range(n, n + n_dups))
