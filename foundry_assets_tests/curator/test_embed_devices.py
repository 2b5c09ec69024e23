"""The MiniLM embedder on the device it is given: CUDA where asked (and present), a clear error where absent."""

import numpy as np
import pytest

from foundry_assets import devices
from foundry_assets.curator.embed import MiniLMEmbedder
from foundry_assets.errors import HardwareIncompatibleError

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A fast brown fox leaps over a lazy dog.",
    "Tax forms.",
]


def test_cuda_without_a_gpu_is_refused_when_the_embedder_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    with pytest.raises(HardwareIncompatibleError, match=r"device is 'cuda:1' but torch sees no CUDA device"):
        MiniLMEmbedder(device="cuda:1")
    assert MiniLMEmbedder(device="auto").device == "cpu"


def test_batch_size_defaults_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert (MiniLMEmbedder(device="auto").device, MiniLMEmbedder(device="auto").batch_size) == ("cuda", 256)
    assert MiniLMEmbedder(device="cpu").batch_size == 64


@pytest.mark.gpu
@pytest.mark.slow
def test_minilm_embeds_on_cuda_like_on_the_cpu(embedder: MiniLMEmbedder) -> None:
    on_gpu = MiniLMEmbedder(device="cuda")
    vectors = on_gpu.encode(TEXTS)
    assert next(on_gpu._load().parameters()).device.type == "cuda"
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), on_gpu.dim)
    np.testing.assert_allclose(vectors, embedder.encode(TEXTS), atol=1e-3)
