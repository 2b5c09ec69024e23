"""Session-wide fixtures: the tiny offline Llama is built once and shared (read-only) by every test."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from foundry_assets.crucible.train import ensure_unsloth_first

ensure_unsloth_first()  # before anything imports transformers, so Unsloth's patches apply in every test

import torch  # noqa: E402

# Two cores: more than one intra-op thread lets OpenMP spin against other processes (20 tiny training steps went
# from 0.6 s to 44 s under load); the tiny models train single-threaded.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init two-layer Llama with a byte-level BPE tokenizer (treat as read-only)."""
    from foundry_assets.demo.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
