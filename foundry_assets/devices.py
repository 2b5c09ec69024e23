"""Where every model-touching stage runs: `compute.device` resolved once, the same way for every stage.

`resolve_device("auto")` is CUDA when torch sees a GPU, else the CPU; `"cuda"` on a node without one is an error that
names the manifest field (never a silent CPU run); `"cpu"` is the CPU. Stages record what they ran on with
`device_metadata`, so a run on a GPU node shows it in every stage's metadata.

`model_dtype(model_dir, device)` is the dtype a stage loads a model in: the checkpoint's own 16-bit dtype on a GPU
(bf16 for a bf16 base, never a silent float32), float32 on the CPU (which has no fast 16-bit matmul).
"""

import json
import os
from pathlib import Path
from typing import Any, Literal

from foundry_assets.errors import HardwareIncompatibleError

Device = Literal["cuda", "cpu"]


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(requested: str) -> Device:
    """`compute.device` ("auto", "cuda" or "cpu") as the device a stage runs on."""
    if requested not in ("auto", "cuda", "cpu"):
        raise HardwareIncompatibleError(f"compute.device is {requested!r}; choose auto, cuda or cpu")
    if requested == "cpu":
        return "cpu"
    if cuda_available():
        return "cuda"
    if requested == "cuda":
        raise HardwareIncompatibleError(
            "compute.device is 'cuda' but torch sees no CUDA device here "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); run the job on a GPU node or set "
            "compute.device to auto or cpu"
        )
    return "cpu"


def device_name(device: str) -> str:
    """ "NVIDIA H200" for CUDA (the current device), "cpu" for the CPU."""
    if device != "cuda":
        return "cpu"
    import torch

    return str(torch.cuda.get_device_name())


def checkpoint_dtype(model_dir: Path) -> str | None:
    """The dtype a checkpoint was saved in (`torch_dtype`/`dtype` in config.json), e.g. "bfloat16"."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value) if value else None


def model_dtype(model_dir: Path, device: str) -> Any:
    """The torch dtype to load `model_dir` in on `device`: its 16-bit dtype on CUDA (bf16 when unsure), fp32 on CPU."""
    import torch

    if device != "cuda":
        return torch.float32
    saved = checkpoint_dtype(model_dir)
    if saved == "float16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def device_metadata(device: str) -> dict[str, str]:
    """What a stage records about where it ran."""
    return {"device": device, "device_name": device_name(device)}
