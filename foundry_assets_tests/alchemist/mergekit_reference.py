"""Test-only reference: mergekit's own `run_merge` on a `dare_ties_config`, the result the streamed merge must match.

It folds every `BASE+ADAPTER` reference into a full copy of the base in a LoRA cache first (mergekit 0.1.5's way),
which is why the product does not call it; on the tiny model that costs nothing.
"""

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file


def run_mergekit(config: dict[str, Any], out: Path, *, seed: int, cache_dir: Path) -> Path:
    """Run mergekit's `run_merge` on `config` into `out` (CPU, LoRA cache in `cache_dir`)."""
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import MergeOptions, run_merge

    LoaderCache().loaders.clear()  # a class-level dict: stale loaders would outlive the files of earlier tests
    options = MergeOptions(
        device="cpu", lora_merge_cache=str(cache_dir), random_seed=seed, copy_tokenizer=True, quiet=True
    )
    try:
        run_merge(MergeConfiguration.model_validate(config), str(out), options)
    finally:
        LoaderCache().flush_all()
        LoaderCache().loaders.clear()
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder's safetensors files."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors
