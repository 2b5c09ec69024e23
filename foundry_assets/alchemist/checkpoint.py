"""The base checkpoint, read tensor by tensor, and merged weights written shard by shard.

A base folder is either plain safetensors (bf16/fp16/fp32) or a pre-quantized bitsandbytes 4-bit folder (such as
`unsloth/llama-3-8b-bnb-4bit`: packed uint8 weights beside `.absmax`/`.quant_map`/`.quant_state.…` tensors). The
second is read as its dequantized 16-bit weights, so a merge of it is a plain 16-bit model with no
`quantization_config`. Nothing here holds more than one tensor of the base at a time.
"""

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from foundry_assets.devices import checkpoint_dtype
from foundry_assets.errors import MergeError

SHARD_BYTES = (
    2 * 1024**3
)  # one output shard: host RAM holds at most this (twice, while safetensors serialises it)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_QUANT_PARTS = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class BaseCheckpoint:
    """A base model folder: its config, weight files, whether it is bnb 4-bit, and the dtype a merge writes."""

    folder: Path
    config: dict[str, Any]
    files: tuple[Path, ...]
    quantized: bool
    out_dtype: torch.dtype

    @classmethod
    def open(cls, folder: Path, config: dict[str, Any]) -> "BaseCheckpoint":
        files = tuple(sorted(folder.glob("*.safetensors")))
        if not files:
            raise MergeError(f"base model {folder}: no .safetensors weights found")
        quant = config.get("quantization_config")
        if quant is None:
            saved = checkpoint_dtype(folder) or _header_dtype(files)
            if saved not in _DTYPES:
                raise MergeError(
                    f"base model {folder}: its weights are {saved!r}; a merge needs float32, float16 or bfloat16"
                )
            return cls(folder, config, files, False, _DTYPES[saved])
        if not (quant.get("quant_method") == "bitsandbytes" and quant.get("load_in_4bit")):
            raise MergeError(
                f"base model {folder} is quantized with {quant.get('quant_method')!r} "
                f"(load_in_4bit={quant.get('load_in_4bit')}); only bitsandbytes 4-bit bases can be merged "
                "(they are dequantized); give the 16-bit base instead"
            )
        # The 16-bit dtype the model was quantized from: the saved dtype, else the compute dtype, else bf16.
        candidates = [checkpoint_dtype(folder), str(quant.get("bnb_4bit_compute_dtype") or "")]
        sixteen = [c for c in candidates if c in ("bfloat16", "float16")]
        return cls(folder, config, files, True, _DTYPES[sixteen[0]] if sixteen else torch.bfloat16)

    @cached_property
    def logical_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes as the model sees them (a 4-bit base's unpacked shapes), no weights read; computed
        once per base (validation, the fold's device choice and the merge plan all read it)."""
        if not self.quantized:
            return header_shapes(self.files)
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(self.folder))
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    def output_plan(self) -> list[tuple[Path, str, tuple[int, ...]]]:
        """(file, name, logical shape) of every tensor a merged model holds, in the base's file order."""
        logical = self.logical_shapes if self.quantized else {}
        plan = []
        for file, name, shape in _headers(self.files):
            if self.quantized and _is_quant_part(name):
                continue
            plan.append((file, name, logical.get(name, shape)))
        return plan

    def merged_config(self) -> dict[str, Any]:
        """The base's config.json for the merged model: no quantization_config, dtype the output dtype."""
        config = {k: v for k, v in self.config.items() if k != "quantization_config"}
        config["dtype"] = dtype_name(self.out_dtype)
        if "torch_dtype" in config:
            config["torch_dtype"] = config["dtype"]
        return config


def dequantize_model(model: Any, dtype: torch.dtype) -> Any:
    """A bnb 4-bit transformers model with plain 16-bit Linear layers in `dtype`, ready to merge and save.

    transformers 5.17's `dequantize()` leaves the 4-bit deserializer in `model._weight_conversions`, and
    `save_pretrained` then fails trying to reverse it (NotImplementedError); the weights are plain tensors now, so
    that conversion is dropped.
    """
    from transformers.integrations.bitsandbytes import Bnb4bitDeserialize

    model = model.dequantize(dtype=dtype)
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [
            c
            for c in conversions
            if not any(isinstance(op, Bnb4bitDeserialize) for op in getattr(c, "operations", ()))
        ]
    return model


def _is_quant_part(name: str) -> bool:
    _, sep, tail = name.partition(".weight.")
    return bool(sep) and tail.startswith(_QUANT_PARTS)


def _headers(files: tuple[Path, ...]) -> Iterator[tuple[Path, str, tuple[int, ...]]]:
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield file, key, tuple(handle.get_slice(key).get_shape())


def header_shapes(files: tuple[Path, ...]) -> dict[str, tuple[int, ...]]:
    return {name: shape for _, name, shape in _headers(files)}


def _header_dtype(files: tuple[Path, ...]) -> str | None:
    """The floating dtype most tensors of the checkpoint are stored in, from the headers."""
    from safetensors import safe_open

    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    counts: dict[str, int] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                kind = names.get(handle.get_slice(key).get_dtype())
                if kind:
                    counts[kind] = counts.get(kind, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


class BaseReader:
    """Open handles on the base's files; `read(file, name)` is one tensor, dequantized for a 4-bit base."""

    def __init__(self, base: BaseCheckpoint, device: str) -> None:
        self.base = base
        self.device = torch.device(device)
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}

    def __enter__(self) -> "BaseReader":
        from safetensors import safe_open

        for file in self.base.files:
            self._handles[file] = self._stack.enter_context(
                safe_open(str(file), framework="pt", device=str(self.device))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(self, file: Path, name: str) -> torch.Tensor:
        """The tensor as the model uses it (on the reader's device)."""
        handle = self._handles[file]
        tensor = handle.get_tensor(name)
        prefix = name + "."
        parts = [k for k in handle.keys() if k.startswith(prefix) and _is_quant_part(k)]  # noqa: SIM118
        if not parts:
            return tensor
        import bitsandbytes.functional as bnbf

        state = bnbf.QuantState.from_dict(
            {k.removeprefix(prefix): handle.get_tensor(k) for k in parts}, device=self.device
        )
        return bnbf.dequantize_4bit(tensor, state)


class ShardWriter:
    """Writes planned tensors to safetensors shards of about `shard_bytes`, each written once it is complete."""

    def __init__(
        self, out: Path, plan: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype, shard_bytes: int
    ):
        size = torch.empty((), dtype=dtype).element_size()
        shards: list[list[str]] = [[]]
        filled = 0
        self.total = 0
        for name, shape in plan:
            nbytes = size * _numel(shape)
            if shards[-1] and filled + nbytes > shard_bytes:
                shards.append([])
                filled = 0
            shards[-1].append(name)
            filled += nbytes
            self.total += nbytes
        count = len(shards)
        self.out = out
        self.files = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
        )
        self.shard_of = {name: i for i, names in enumerate(shards) for name in names}
        self._remaining = [set(names) for names in shards]
        self._buffer: dict[str, torch.Tensor] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        from safetensors.torch import save_file

        index = self.shard_of[name]
        self._buffer[name] = tensor.detach().to("cpu").contiguous()
        self._remaining[index].discard(name)
        if not self._remaining[index]:
            save_file(self._buffer, str(self.out / self.files[index]), metadata={"format": "pt"})
            self._buffer = {}

    def finish(self) -> None:
        if any(self._remaining) or self._buffer:
            missing = sorted(set().union(*self._remaining))[:5]
            raise MergeError(f"merge output is incomplete: tensors never written, e.g. {missing}")
        if len(self.files) > 1:
            index = {
                "metadata": {"total_size": self.total},
                "weight_map": {name: self.files[i] for name, i in sorted(self.shard_of.items())},
            }
            (self.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
