"""Merging adapters into one model folder: DARE-TIES through mergekit for two or more, a PEFT fold for one."""

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.errors import MergeError
from foundry_assets.lot import sha256_file, sha256_tree

TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "merges.txt",
    "vocab.json",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass(frozen=True)
class AdapterRef:
    """One adapter to merge: its folder, DARE-TIES weight and density, and a display name."""

    path: Path
    weight: float = 1.0
    density: float = 0.5
    name: str = ""

    @property
    def label(self) -> str:
        """The name, or the folder name when no name was given."""
        return self.name or Path(self.path).name


@dataclass
class MergeResult:
    """What a merge wrote and from what: the provenance recorded with the merged model."""

    method: Literal["dare_ties", "fold"]
    out_dir: Path
    sources: list[dict[str, Any]]
    files: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-able dict for Dagster metadata and the audit trail."""
        return {
            "method": self.method,
            "out_dir": str(self.out_dir),
            "sources": self.sources,
            "files": dict(sorted(self.files.items())),
            "config": self.config,
        }


def _tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from safetensors headers (no weights are read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{what}: {path.name} is missing from {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MergeError(f"{what}: {path} cannot be read: {e}") from None
    if not isinstance(data, dict):
        raise MergeError(f"{what}: {path} is not a JSON object")
    return data


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
    config = _read_json(folder / "adapter_config.json", what)
    if config.get("peft_type") != "LORA":
        raise MergeError(f"{what}: peft_type is {config.get('peft_type')!r}; only LoRA/DoRA adapters merge")
    claimed = Path(str(config.get("base_model_name_or_path") or ""))
    if (claimed / "config.json").is_file():
        theirs = _read_json(claimed / "config.json", f"{what} base model")
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
        shapes = _tensor_shapes([weights])
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


def _validate(base_model: Path, adapters: list[AdapterRef]) -> None:
    """Every check that can fail before any merge work starts."""
    if not adapters:
        raise MergeError("no adapters to merge: give at least one adapter folder")
    base_config = _read_json(base_model / "config.json", f"base model {base_model}")
    base_files = sorted(base_model.glob("*.safetensors"))
    if not base_files:
        raise MergeError(f"base model {base_model}: no .safetensors weights found")
    base_shapes = _tensor_shapes(base_files)
    labels = [a.label for a in adapters]
    if len(set(labels)) != len(labels):
        raise MergeError(f"adapter names must be unique; got {labels}")
    for ref in adapters:
        _check_adapter(ref, base_config, base_shapes)


def _source_record(ref: AdapterRef) -> dict[str, Any]:
    return {
        "name": ref.label,
        "path": str(Path(ref.path).resolve()),
        "weight": ref.weight,
        "density": ref.density,
        "sha256": sha256_tree(Path(ref.path)),
    }


def _cache_key(base_model: Path, sources: list[dict[str, Any]]) -> str:
    """Key of the LoRA-merge cache: adapter hashes plus the base's config hash and file sizes and times."""
    base = [sha256_file(base_model / "config.json")]
    base += [
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        for p in sorted(base_model.glob("*.safetensors"))
    ]
    return hashlib.sha256(json.dumps([base, sources], sort_keys=True).encode()).hexdigest()[:16]


def dare_ties_config(
    base_model: Path, adapters: list[AdapterRef], *, normalize: bool = True, dtype: str = "float32"
) -> dict[str, Any]:
    """The mergekit configuration: each adapter applied to the base (`BASE+ADAPTER`), then DARE-TIES."""
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


def _prepare_lora_cache(references: list[Any], cache_dir: Path) -> None:
    """Fold every `BASE+ADAPTER` reference into the cache first, each written whole then renamed into place.

    mergekit would fold them inside `run_merge` after seeding, so whether the cache was warm would change the
    DARE drop masks; folding here keeps the output a function of the seed alone.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    for ref in references:
        if ref.lora is None or (cache_dir / f"{ref.model._unique_id()}_{ref.lora._unique_id()}").exists():
            continue  # mergekit 0.1.5 names its LoRA cache folders this way
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache_dir))
        try:
            folded = Path(ref.merged(cache_dir=str(staging)).model.path)
            os.replace(folded, cache_dir / folded.name)
        except Exception as e:
            raise MergeError(f"applying adapter {ref.lora} to {ref.model} failed: {e}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _run_dare_ties(config: dict[str, Any], out: Path, *, seed: int, cache_dir: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import MergeOptions, run_merge

    try:
        merge_config = MergeConfiguration.model_validate(config)
    except Exception as e:
        raise MergeError(f"mergekit rejected the merge configuration: {e}") from e
    _prepare_lora_cache(merge_config.referenced_models(), cache_dir)
    LoaderCache().loaders.clear()  # a class-level dict: stale loaders would outlive files and skew the RNG
    options = MergeOptions(
        device="cpu",
        lora_merge_cache=str(cache_dir),
        random_seed=seed,
        copy_tokenizer=True,
        quiet=True,
    )
    try:
        run_merge(merge_config, str(out), options)
    except Exception as e:
        raise MergeError(f"mergekit dare_ties merge failed: {type(e).__name__}: {e}") from e
    finally:
        LoaderCache().flush_all()
        LoaderCache().loaders.clear()


def _fold(base_model: Path, adapter: AdapterRef, out: Path) -> dict[str, Any]:
    """Fold one adapter into the base with PEFT (keeps DoRA magnitudes) and save a full model folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
        merged = PeftModel.from_pretrained(model, str(adapter.path), is_trainable=False).merge_and_unload()
        merged.save_pretrained(str(out))
    except Exception as e:
        raise MergeError(f"folding adapter {adapter.label!r} into {base_model} failed: {e}") from e
    donor = Path(adapter.path) if (Path(adapter.path) / "tokenizer_config.json").is_file() else base_model
    for name in TOKENIZER_FILES:
        if (donor / name).is_file():
            shutil.copy2(donor / name, out / name)
    return {"peft_merge_and_unload": True, "dtype": "float32", "tokenizer_from": str(donor.resolve())}


def _publish_folder(tmp: Path, out_dir: Path) -> None:
    """Move the finished folder into place; an existing `out_dir` is replaced only after the new one is whole."""
    old: Path | None = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def merge_adapters(
    *,
    base_model: Path,
    adapters: list[AdapterRef],
    out_dir: Path,
    normalize: bool = True,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> MergeResult:
    """Merge adapters into a loadable model folder: DARE-TIES for two or more, a PEFT fold for one."""
    base_model, out_dir = Path(base_model), Path(out_dir)
    adapters = [AdapterRef(Path(a.path), a.weight, a.density, a.name) for a in adapters]
    _validate(base_model, adapters)
    sources = [_source_record(a) for a in adapters]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.work-", dir=out_dir.parent))
    try:
        out = work / out_dir.name  # same basename as the target: mergekit writes it into the model card
        method: Literal["dare_ties", "fold"]
        if len(adapters) == 1:
            method = "fold"
            out.mkdir()
            config = _fold(base_model, adapters[0], out)
        else:
            method = "dare_ties"
            config = dare_ties_config(base_model, adapters, normalize=normalize)
            digest = _cache_key(base_model, sources)
            cache = (Path(cache_dir) / digest) if cache_dir else work / "lora-cache"
            _run_dare_ties(config, out, seed=seed, cache_dir=cache)
            config = {**config, "random_seed": seed}
        files = sha256_tree(out)
        _publish_folder(out, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MergeResult(method=method, out_dir=out_dir, sources=sources, files=files, config=config)
