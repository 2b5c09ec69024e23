"""Synthetic data shared by the curator tests: embeddings for SemDeDup, topics for drops."""

import numpy as np


def clustered(n: int, n_dups: int, dim: int, seed: int) -> tuple[np.ndarray, set[int]]:
    """A mixture of 40 topics with near-copies (cosine ≈ 0.97-0.99) of random rows appended; returns the copies."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    base = centers[rng.integers(0, 40, n)] + rng.standard_normal((n, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies = base[rng.integers(0, n, n_dups)] + 0.01 * rng.standard_normal((n_dups, dim))
    return np.vstack([base, copies]).astype(np.float32), set(range(n, n + n_dups))


TOPICS = [
    "the capital of France",
    "photosynthesis in plants",
    "the water cycle",
    "reversing a string in Python",
    "the plot of Hamlet",
    "how spiders build webs",
    "the boiling point of water",
    "the causes of the French Revolution",
]
"""Distinct subjects: records about them are far apart for MiniLM, so only planted copies are near-duplicates."""
