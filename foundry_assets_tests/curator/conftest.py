"""Curator fixtures: one MiniLM embedder per session (loading it costs seconds), shared read-only."""

import pytest

from foundry_assets.curator.embed import MiniLMEmbedder


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """The real all-MiniLM-L6-v2 on the CPU, loaded once."""
    model = MiniLMEmbedder(device="cpu", batch_size=32)
    model.encode(["warm up"])
    return model
