"""Merging adapters into one model folder: DARE-TIES (mergekit's method, streamed) for two or more, a PEFT fold for one.

The merged model is written in the base checkpoint's dtype (bf16 for a bf16 base; the 16-bit dtype a bitsandbytes
4-bit base was quantized from, its weights dequantized), on `device` (CUDA when asked and the model fits), in
safetensors shards, with no intermediate full copies of the model on disk.
"""

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from foundry_assets.alchemist.checkpoint import (
    SHARD_BYTES,
    BaseCheckpoint,
    dequantize_model,
    dtype_name,
    header_shapes,
)
from foundry_assets.alchemist.dare_ties import stream_dare_ties
from foundry_assets.alchemist.refs import AdapterRef, read_json
from foundry_assets.alchemist.tokenizer import (
    TOKENIZER_FILES,
    copy_side_files,
    stop_at_end_of_turn,
    tokenizer_donor,
)
from foundry_assets.devices import resolve_device
from foundry_assets.errors import MergeError
from foundry_assets.fsio import replace_dir
from foundry_assets.hashing import sha256_tree

logger = logging.getLogger(__name__)


@dataclass
class MergeResult:
    """What a merge wrote and from what: the provenance recorded with the merged model."""

    method: Literal["dare_ties", "fold"]
    out_dir: Path
    sources: list[dict[str, Any]]
    files: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)
    dtype: str = ""
    device: str = "cpu"

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-able dict for Dagster metadata and the audit trail."""
        return {
            "method": self.method,
            "out_dir": str(self.out_dir),
            "dtype": self.dtype,
            "device": self.device,
            "sources": self.sources,
            "files": dict(sorted(self.files.items())),
            "config": self.config,
        }


def _check_adapter(
    ref: AdapterRef, base_config: dict[str, Any], base_shapes: dict[str, tuple[int, ...]]
) -> None:
    """Raise MergeError unless `ref` is a readable LoRA/DoRA adapter made for this base's architecture."""
    what = f"adapter {ref.label!r} ({ref.path})"
    folder = Path(ref.path)
    if not folder.is_dir():
        raise MergeError(f"{what}: the folder does not exist")
    if ref.weight <= 0 or not 0 < ref.density <= 1:
        raise MergeError(f"{what}: weight must be > 0 and density in (0, 1]; got {ref.weight}, {ref.density}")
    config = read_json(folder / "adapter_config.json", what)
    if config.get("peft_type") != "LORA":
        raise MergeError(f"{what}: peft_type is {config.get('peft_type')!r}; only LoRA/DoRA adapters merge")
    # The foundry's adapters name their base by its hub name (the manifest's base_model), which says nothing about the
    # local base folder merged here: the tensor shapes below decide whether the adapter fits it. Only an adapter
    # that names a local folder (saved before the crucible wrote the name, or elsewhere) has its architecture read.
    claimed = Path(str(config.get("base_model_name_or_path") or ""))
    if claimed.is_absolute() and (claimed / "config.json").is_file():
        theirs = read_json(claimed / "config.json", f"{what} base model")
        for key in ("model_type", "architectures"):
            if theirs.get(key) != base_config.get(key):
                raise MergeError(
                    f"{what} was trained on {claimed} ({key}={theirs.get(key)!r}), a different architecture "
                    f"from the base model ({key}={base_config.get(key)!r})"
                )
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise MergeError(f"{what}: adapter_model.safetensors is missing (pickled .bin adapters are refused)")
    try:
        shapes = header_shapes((weights,))
    except Exception as e:
        raise MergeError(f"{what}: {weights.name} cannot be read: {e}") from e
    for key, shape in shapes.items():
        module, sep, part = key.removeprefix("base_model.model.").partition(".lora_")
        if not sep:  # a fully trained module (modules_to_save) must replace a base tensor of the same shape
            if base_shapes.get(module) != shape:
                raise MergeError(
                    f"{what}: tensor {key} {list(shape)} has no base tensor of that name and shape"
                )
            continue
        base_weight = base_shapes.get(f"{module}.weight")
        if base_weight is None:
            raise MergeError(f"{what}: tensor {key} targets {module}, which the base model does not have")
        out_features, in_features = base_weight[0], base_weight[-1]
        if (
            (part.startswith("A.") and shape[-1] != in_features)
            or (part.startswith("B.") and shape[0] != out_features)
            or (part.startswith("magnitude") and shape[0] != out_features)
        ):
            raise MergeError(
                f"{what}: tensor {key} has shape {list(shape)}, which does not fit the base weight "
                f"{module}.weight {list(base_weight)}; the adapter was trained on a different architecture"
            )


def _validate(base_model: Path, adapters: list[AdapterRef]) -> BaseCheckpoint:
    """Every check that can fail before any merge work starts; returns the opened base."""
    if not adapters:
        raise MergeError("no adapters to merge: give at least one adapter folder")
    base_config = read_json(base_model / "config.json", f"base model {base_model}")
    base = BaseCheckpoint.open(base_model, base_config)
    try:
        # a 4-bit base: the unpacked shapes, from its config on the meta device
        base_shapes = base.logical_shapes
    except Exception as e:
        raise MergeError(f"base model {base_model}: its tensor shapes cannot be read: {e}") from e
    labels = [a.label for a in adapters]
    if len(set(labels)) != len(labels):
        raise MergeError(f"adapter names must be unique; got {labels}")
    for ref in adapters:
        _check_adapter(ref, base_config, base_shapes)
    return base


def _source_record(ref: AdapterRef) -> dict[str, Any]:
    return {
        "name": ref.label,
        "path": str(Path(ref.path).resolve()),
        "weight": ref.weight,
        "density": ref.density,
        "sha256": sha256_tree(Path(ref.path)),
    }


def dare_ties_config(
    base_model: Path, adapters: list[AdapterRef], *, normalize: bool = True, dtype: str
) -> dict[str, Any]:
    """The merge as a mergekit configuration: each adapter applied to the base (`BASE+ADAPTER`), then DARE-TIES.

    `dtype` is the output dtype (the base's). `stream_dare_ties` computes what mergekit's `run_merge` would for this
    configuration, tensor by tensor, in float32, rounding once to `dtype` at the end.
    """
    base = str(base_model.resolve())
    return {
        "merge_method": "dare_ties",
        "base_model": base,
        "models": [
            {
                "model": f"{base}+{Path(a.path).resolve()}",
                "parameters": {"weight": a.weight, "density": a.density},
            }
            for a in adapters
        ],
        "parameters": {"normalize": normalize, "rescale": True, "int8_mask": False},
        "dtype": dtype,
    }


def _fold_device(base: BaseCheckpoint, shapes: dict[str, tuple[int, ...]], device: str) -> tuple[str, str]:
    """CUDA when asked and the whole model fits in free GPU memory (with headroom), else the CPU and why."""
    if device != "cuda":
        return "cpu", ""
    import torch

    need = sum(math.prod(shape) for shape in shapes.values()) * base.out_dtype.itemsize
    free, _ = torch.cuda.mem_get_info()
    if need * 1.2 + 2**30 <= free:
        return "cuda", ""
    note = f"the model needs {need / 2**30:.1f} GiB in {dtype_name(base.out_dtype)}, the GPU has {free / 2**30:.1f} GiB free"
    logger.warning("folding on the CPU instead of CUDA: %s", note)
    return "cpu", note


def _fold(base: BaseCheckpoint, adapter: AdapterRef, out: Path, device: str) -> dict[str, Any]:
    """Fold one adapter into the base with PEFT (keeps DoRA magnitudes): loaded on `device` in the base's dtype.

    A bitsandbytes 4-bit base is loaded 4-bit, dequantized to its 16-bit dtype, then folded: a 16-bit model.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    device, note = _fold_device(base, base.logical_shapes, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(base.folder), dtype=base.out_dtype, device_map=device, low_cpu_mem_usage=True
        )
        if base.quantized:
            model = dequantize_model(model, base.out_dtype)
        merged = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False).merge_and_unload()
        del model
        merged.save_pretrained(str(out), max_shard_size=SHARD_BYTES)
        del merged
    except Exception as e:
        raise MergeError(f"folding adapter {adapter.label!r} into {base.folder} failed: {e}") from e
    donor = tokenizer_donor(base, [adapter])
    copy_side_files(donor, out)
    config: dict[str, Any] = {
        "peft_merge_and_unload": True,
        "dtype": dtype_name(base.out_dtype),
        "device": device,
        "dequantized_4bit_base": base.quantized,
        "tokenizer_from": str(donor.resolve()),
    }
    if note:
        config["device_note"] = note
    return config


def portable_config(config: dict[str, Any], base_name: str, adapters: list[AdapterRef]) -> dict[str, Any]:
    """`config` as the published `mergekit_config.yml` shows it: the base by its hub name and each adapter by its
    label, never this node's folders (a user re-running it with `mergekit-yaml` points them at their copies)."""
    models = [
        {**m, "model": f"{base_name}+{a.label}"} for m, a in zip(config["models"], adapters, strict=True)
    ]
    return {**config, "base_model": base_name, "models": models}


def _dare_ties(
    base: BaseCheckpoint,
    adapters: list[AdapterRef],
    out: Path,
    *,
    normalize: bool,
    seed: int,
    device: str,
    base_name: str,
) -> dict[str, Any]:
    """Streamed DARE-TIES into `out`, with the config, tokenizer and the mergekit configuration it follows."""
    from mergekit.config import MergeConfiguration

    config = dare_ties_config(base.folder, adapters, normalize=normalize, dtype=dtype_name(base.out_dtype))
    try:
        MergeConfiguration.model_validate(config)
    except Exception as e:
        raise MergeError(f"mergekit rejected the merge configuration: {e}") from e
    try:
        stream_dare_ties(
            base,
            [(a.label, Path(a.path), a.weight, a.density) for a in adapters],
            out,
            normalize=normalize,
            seed=seed,
            device=device,
        )
    except MergeError:
        raise
    except Exception as e:
        raise MergeError(f"dare_ties merge failed: {type(e).__name__}: {e}") from e
    (out / "config.json").write_text(json.dumps(base.merged_config(), indent=2, sort_keys=True) + "\n")
    shipped = portable_config(config, base_name, adapters)
    (out / "mergekit_config.yml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    copy_side_files(base.folder, out, ("generation_config.json",))
    donor = tokenizer_donor(base, adapters)
    copy_side_files(donor, out, TOKENIZER_FILES)  # the template the adapters trained with, not the base's
    return {
        **config,
        "random_seed": seed,
        "device": device,
        "compute_dtype": "float32",
        "streamed": True,
        "tokenizer_from": str(donor.resolve()),
    }


def merge_adapters(
    *,
    base_model: Path,
    adapters: list[AdapterRef],
    out_dir: Path,
    normalize: bool = True,
    seed: int = 0,
    device: str = "cpu",
    base_name: str | None = None,
) -> MergeResult:
    """Merge adapters into a loadable model folder: DARE-TIES for two or more, a PEFT fold for one.

    `device` is "cpu", "cuda" or "auto" (as `compute.device`); the output is in the base checkpoint's dtype.
    `base_name` (the manifest's `base_model`; default the folder's name) is how the shipped mergekit_config.yml
    names the base.
    """
    base_model, out_dir = Path(base_model), Path(out_dir)
    adapters = [AdapterRef(Path(a.path), a.weight, a.density, a.name) for a in adapters]
    device = resolve_device(device)
    base = _validate(base_model, adapters)
    sources = [_source_record(a) for a in adapters]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.work-", dir=out_dir.parent))
    try:
        out = work / out_dir.name
        out.mkdir()
        method: Literal["dare_ties", "fold"]
        if len(adapters) == 1:
            method = "fold"
            config = _fold(base, adapters[0], out, device)
        else:
            method = "dare_ties"
            config = _dare_ties(
                base,
                adapters,
                out,
                normalize=normalize,
                seed=seed,
                device=device,
                base_name=base_name or base_model.name,
            )
        config["end_of_turn_token_id"] = stop_at_end_of_turn(out)
        files = sha256_tree(out)
        replace_dir(out, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MergeResult(
        method=method,
        out_dir=out_dir,
        sources=sources,
        files=files,
        config=config,
        dtype=dtype_name(base.out_dtype),
        device=config["device"],
    )
