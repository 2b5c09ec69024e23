"""Crucible fixtures: Unsloth imported before anything pulls in transformers, and tiny formatted training sets."""

import os
from pathlib import Path
from typing import Any

import pytest

from foundry_assets.crucible.backend import ensure_unsloth_first
from foundry_assets.crucible.params import TrainParams

# The root conftest imports Unsloth first and sets one torch thread; this records whether Unsloth imported.
UNSLOTH = ensure_unsloth_first()

# Hyper-parameters of every CPU training test on the tiny model: 20 steps, a loss record every 10.
PARAMS = TrainParams(
    rank=8,
    alpha=None,
    dropout=0.0,
    learning_rate=5e-3,
    max_steps=20,
    max_seq_length=64,
    logging_steps=10,
    seed=0,
    batch_size=4,
    grad_accum=1,
)


def qa(i: int) -> dict[str, Any]:
    """One SFT row in TRL's conversational prompt-completion format, as the curator writes it."""
    return {
        "prompt": [{"role": "user", "content": f"Question: what is {i} plus {i}?"}],
        "completion": [{"role": "assistant", "content": f"Answer: {2 * i}."}],
    }


@pytest.fixture(scope="session")
def sft_examples() -> list[dict[str, Any]]:
    """Thirty-two conversational prompt-completion SFT rows."""
    return [qa(i) for i in range(32)]


@pytest.fixture(scope="session")
def preference_examples() -> list[dict[str, Any]]:
    """Thirty-two ORPO rows in TRL's conversational preference format (`prompt`, `chosen`, `rejected`)."""
    return [
        {
            "prompt": [{"role": "user", "content": f"Question: what is {i} plus {i}?"}],
            "chosen": [{"role": "assistant", "content": f"{2 * i}."}],
            "rejected": [{"role": "assistant", "content": f"{2 * i + 1}."}],
        }
        for i in range(32)
    ]


@pytest.fixture(scope="session")
def real_shape_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init Llama-3.2-1B-shaped model, built on this machine's GPU (or reused from FOUNDRY_GPU_MODEL_DIR)."""
    from foundry_assets.crucible.vram import KNOWN_ARCHITECTURES
    from foundry_assets.demo.tiny_model import build_random_llama

    given = os.environ.get("FOUNDRY_GPU_MODEL_DIR")
    target = Path(given) if given else tmp_path_factory.mktemp("models") / "llama-3.2-1b"
    return build_random_llama(target, KNOWN_ARCHITECTURES["llama-3.2-1b"])
