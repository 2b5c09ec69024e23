"""Streaming DARE-TIES: mergekit's dare_ties, one base tensor at a time, with task vectors taken from the adapters.

mergekit 0.1.5 applies a `BASE+ADAPTER` reference by folding the adapter into a full copy of the base in its LoRA
cache (`ModelReference.merged`: PEFT `merge_and_unload` + `save_pretrained`) before merging; it has no loader that
computes a LoRA on the fly. With two sources at 8B that is 32 GB of copies beside the base and the output. The
merge itself is per tensor, though: `GeneralizedTaskArithmeticMerge.merge_group` takes each source's task vector
(source − base), sparsifies it (`sparsify`, DARE with l1 rescale), weights it, keeps the entries that agree with the
TIES sign consensus (`get_mask`) and, with `normalize`, divides by the agreeing weights. So this module computes
each source's task vector straight from its adapter (what `BASE+ADAPTER` minus the base would be) and hands
mergekit's own `dare_ties` method the group [zero base, task vectors]: mergekit's math on exact task vectors, the
result added to the base in float32 and written in the base's dtype. Tensors no adapter touches are copied through
(their task vectors are zero, which TIES masks out). Each tensor's DARE draw is seeded from the seed and the tensor's
name, so the output does not depend on the order of the work.
"""

import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from foundry_assets.alchemist.checkpoint import SHARD_BYTES, BaseCheckpoint, BaseReader, ShardWriter
from foundry_assets.errors import MergeError

_PREFIX = "base_model.model."
# adapter_config.json features whose effect on the weights this module does not reproduce (PEFT's fold does)
_UNSUPPORTED = {
    "fan_in_fan_out": False,
    "lora_bias": False,
    "layer_replication": None,
    "target_parameters": None,
    "trainable_token_indices": None,
    "use_bdlora": None,
}


class AdapterDeltas:
    """One LoRA/DoRA adapter's task vectors: `delta(weight name, base weight)` = (base with adapter) − base."""

    def __init__(self, folder: Path, label: str) -> None:
        self.label = label
        self.folder = Path(folder)
        self.config = json.loads((self.folder / "adapter_config.json").read_text(encoding="utf-8"))
        what = f"adapter {label!r} ({folder})"
        for key, plain in _UNSUPPORTED.items():
            if self.config.get(key, plain) not in (plain, {}, []):
                raise MergeError(
                    f"{what}: {key}={self.config[key]!r} is not supported by the streaming DARE-TIES merge; "
                    "fold it alone (one adapter) or retrain without it"
                )
        self._file = self.folder / "adapter_model.safetensors"
        self.parts: dict[
            str, dict[str, str]
        ] = {}  # base weight name -> part ("A", "B", "magnitude", …) -> key
        from safetensors import safe_open

        with safe_open(str(self._file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                self._index(key, what)
        for name, parts in self.parts.items():
            kinds = set(parts)
            if kinds not in ({"full"}, {"A", "B"}, {"A", "B", "magnitude"}, {"embedding_A", "embedding_B"}):
                raise MergeError(
                    f"{what}: {name} has adapter tensors {sorted(kinds)}, a combination the streaming DARE-TIES "
                    "merge does not know (LoRA, DoRA on linear layers, LoRA on embeddings, modules_to_save)"
                )
        self._handle: Any = None

    def _index(self, key: str, what: str) -> None:
        name = key.removeprefix(_PREFIX)
        for marker, part in (
            (".lora_A.weight", "A"),
            (".lora_B.weight", "B"),
            (".lora_magnitude_vector", "magnitude"),
            (".lora_embedding_A", "embedding_A"),
            (".lora_embedding_B", "embedding_B"),
        ):
            if name.endswith(marker):
                module = name.removesuffix(marker)
                self.parts.setdefault(f"{module}.weight", {})[part] = key
                return
        if ".lora_" in name:
            raise MergeError(f"{what}: tensor {key} is of a kind the streaming DARE-TIES merge does not know")
        self.parts.setdefault(name, {})["full"] = key  # modules_to_save: a whole replacement tensor

    @contextmanager
    def opened(self, device: torch.device) -> Iterator["AdapterDeltas"]:
        from safetensors import safe_open

        with safe_open(str(self._file), framework="pt", device=str(device)) as handle:
            self._handle = handle
            try:
                yield self
            finally:
                self._handle = None

    def _scaling(self, module: str, rank: int) -> float:
        from peft.utils.other import get_pattern_key

        rank_pattern: dict[str, int] = self.config.get("rank_pattern") or {}
        alpha_pattern: dict[str, float] = self.config.get("alpha_pattern") or {}
        r = int(rank_pattern.get(get_pattern_key(list(rank_pattern), module), self.config["r"]))
        alpha = float(
            alpha_pattern.get(get_pattern_key(list(alpha_pattern), module), self.config["lora_alpha"])
        )
        if r != rank:
            raise MergeError(f"adapter {self.label!r}: {module} has rank {rank} but its config says {r}")
        return alpha / (math.sqrt(r) if self.config.get("use_rslora") else r)

    def delta(self, name: str, base: torch.Tensor) -> torch.Tensor:
        """The task vector for base tensor `name` (one this adapter touches), float32 on base's device."""
        parts = self.parts[name]

        def get(part: str) -> torch.Tensor:
            return self._handle.get_tensor(parts[part]).to(device=base.device, dtype=torch.float32)

        module = name.removesuffix(".weight")
        if "full" in parts:
            return get("full") - base
        if "embedding_A" in parts:  # PEFT Embedding: (B @ A)ᵀ · scaling
            a, b = get("embedding_A"), get("embedding_B")
            return (b @ a).T * self._scaling(module, a.shape[0])
        a, b = get("A"), get("B")
        lora = (b @ a) * self._scaling(module, a.shape[0])
        if "magnitude" not in parts:
            return lora
        # DoRA, as PEFT merges it: magnitude · (W + ΔW) / ‖W + ΔW‖ (norm of each output row) − W
        weight = base + lora
        norm = torch.linalg.norm(weight, dim=1)
        return (get("magnitude") / norm).view(-1, 1) * weight - base


def tensor_seed(seed: int, name: str) -> int:
    """The seed of one tensor's DARE draw: a function of the merge seed and the tensor name only."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def merge_tensor(
    name: str,
    base: torch.Tensor,
    deltas: list[tuple[str, torch.Tensor]],
    *,
    weights: dict[str, float],
    densities: dict[str, float],
    normalize: bool,
    seed: int,
) -> torch.Tensor:
    """base + mergekit dare_ties of the labelled task vectors (float32)."""
    from mergekit.merge_methods.api import merge_tensors

    labels = [label for label, _ in deltas]
    with _seeded(tensor_seed(seed, name), base.device):
        mixed = merge_tensors(
            [torch.zeros_like(base), *(d for _, d in deltas)],
            "dare_ties",
            ids=["__base__", *labels],
            base_index=0,
            name=name,
            dtype=torch.float32,
            parameters={
                "weight": {k: weights[k] for k in labels},
                "density": {k: densities[k] for k in labels},
                "normalize": normalize,
                "rescale": True,
                "int8_mask": False,
            },
        )
    return base + mixed


def stream_dare_ties(
    base: BaseCheckpoint,
    adapters: list[tuple[str, Path, float, float]],
    out: Path,
    *,
    normalize: bool,
    seed: int,
    device: str,
    shard_bytes: int | None = None,
) -> None:
    """Write the merged weights of `base` + DARE-TIES(adapters) to `out` (label, folder, weight, density each)."""
    torch_device = torch.device(device)
    sources = [AdapterDeltas(folder, label) for label, folder, _, _ in adapters]
    weights = {label: weight for label, _, weight, _ in adapters}
    densities = {label: density for label, _, _, density in adapters}
    plan = base.output_plan()
    known = {name for _, name, _ in plan}
    for source in sources:
        unknown = sorted(set(source.parts) - known)
        if unknown:
            raise MergeError(
                f"adapter {source.label!r} targets tensors the base does not have: {unknown[:5]}"
            )
    writer = ShardWriter(
        out, [(name, shape) for _, name, shape in plan], base.out_dtype, shard_bytes or SHARD_BYTES
    )
    with ExitStack() as stack, torch.no_grad():
        reader = stack.enter_context(BaseReader(base, device))
        for source in sources:
            stack.enter_context(source.opened(torch_device))
        for file, name, shape in plan:
            tensor = reader.read(file, name)
            if tuple(tensor.shape) != shape:
                raise MergeError(f"base tensor {name} has shape {list(tensor.shape)}, expected {list(shape)}")
            touching = [s for s in sources if name in s.parts]
            if touching and tensor.is_floating_point():
                work = tensor.to(torch.float32)
                deltas = [(s.label, s.delta(name, work)) for s in touching]
                tensor = merge_tensor(
                    name,
                    work,
                    deltas,
                    weights=weights,
                    densities=densities,
                    normalize=normalize,
                    seed=seed,
                )
                del work, deltas
            if tensor.is_floating_point():
                tensor = tensor.to(base.out_dtype)
            writer.add(name, tensor)
            del tensor
    writer.finish()
