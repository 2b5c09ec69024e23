"""The alchemist: merge LoRA/DoRA adapters into one model folder (DARE-TIES through mergekit, or a PEFT fold).

A merge source may be another foundry job. What is known about that job is read from the foundry's own records,
with no Dagster involved: its registered manifest (base model), its hash-chained audit trail (the latest
`adapter_saved` record with the adapter's file hashes, the lot of the run that trained it, and the latest
`exam_verdict` after it) and the adapter folder itself, re-hashed. `resolve_job_sources` refuses a source that does not
exist, was trained on another base, is itself a merge job, has no exam, failed its latest exam, or whose adapter
changed since it was examined — all before any merge work.
"""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from foundry_assets.audit import AuditTrail
from foundry_assets.errors import FoundryError, MergeError
from foundry_assets.lot import sha256_file, sha256_tree
from foundry_assets.manifest import TrainingManifest
from foundry_assets.workspace import Workspace

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


@dataclass(frozen=True)
class JobSource:
    """Another job's examined adapter, ready to merge: where it is, what it hashes to, and its lot number."""

    job_id: str
    adapter_dir: Path
    weight: float
    density: float
    lot_number: str
    adapter_files: dict[str, str]
    exam: dict[str, Any]
    train_path: Path | None = None

    def ref(self) -> AdapterRef:
        return AdapterRef(self.adapter_dir, self.weight, self.density, self.job_id)

    def to_metadata(self) -> dict[str, Any]:
        """The lineage record of this source (merged_model metadata and the audit trail)."""
        return {
            "job_id": self.job_id,
            "lot_number": self.lot_number,
            "adapter_dir": str(self.adapter_dir),
            "adapter_sha256": dict(sorted(self.adapter_files.items())),
            "weight": self.weight,
            "density": self.density,
            "exam": self.exam,
        }


def _latest(records: list[dict[str, Any]], event: str, *, before: int | None = None) -> dict[str, Any] | None:
    """The last record of `event` (before sequence number `before`, when given)."""
    for record in reversed(records):
        if record["event"] == event and (before is None or record["seq"] < before):
            return record
    return None


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return a == b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _job_source(
    job_id: str,
    weight: float,
    density: float,
    *,
    manifest: TrainingManifest,
    workspace: Workspace,
    trail: AuditTrail,
    recorded_lot: str | None,
) -> JobSource:
    """One source job, checked; MergeError names the job and the reason."""
    what = f"merge source job {job_id!r}"
    if job_id == manifest.job_id:
        raise MergeError(f"{what} is this job itself; a job cannot merge its own adapter as a source")
    if not workspace.manifest_path(job_id).is_file():
        raise MergeError(
            f"{what} does not exist: no manifest is registered at {workspace.manifest_path(job_id)}; "
            "run that job first or fix the job id"
        )
    try:
        theirs = workspace.load(job_id)
    except FoundryError as e:
        raise MergeError(f"{what}: its registered manifest cannot be read: {e}") from e
    if theirs.merge.sources:
        raise MergeError(
            f"{what} is itself a merge job (it names {len(theirs.merge.sources)} sources); its trained adapter is "
            "not what its exam judged. Name its source jobs here directly instead"
        )
    ours_base = (manifest.base_model, manifest.model_path or manifest.base_model)
    their_base = (theirs.base_model, theirs.model_path or theirs.base_model)
    if ours_base[0] != their_base[0] or not _same_path(ours_base[1], their_base[1]):
        raise MergeError(
            f"{what} was trained on another base: base_model={their_base[0]!r}, model_path={their_base[1]!r}; "
            f"this job's is base_model={ours_base[0]!r}, model_path={ours_base[1]!r}"
        )
    try:
        records = trail.records()
    except FoundryError as e:
        raise MergeError(f"{what}: its audit trail cannot be trusted: {e}") from e
    saved = _latest(records, "adapter_saved")
    if saved is None:
        raise MergeError(
            f"{what} has no trained adapter (no adapter_saved record in {trail.path}); run it first"
        )
    accepted = _latest(records, "job_accepted", before=saved["seq"])
    lot = str((accepted or {}).get("data", {}).get("lot_number") or "")
    verdicts = [r for r in records if r["event"] == "exam_verdict" and r["seq"] > saved["seq"]]
    if not verdicts:
        raise MergeError(
            f"{what}: its latest adapter (lot {lot[:12]}…) has not been examined; run its exam first"
        )
    verdict = verdicts[-1]["data"]
    if not verdict.get("passed"):
        reasons = "; ".join(verdict.get("reasons") or []) or "no reason recorded"
        raise MergeError(f"{what} failed its latest exam (lot {lot[:12]}…): {reasons}")
    if verdict.get("lot_number") and verdict["lot_number"] != lot:
        raise MergeError(
            f"{what}: its latest exam judged lot {verdict['lot_number']}, not its adapter's lot {lot}"
        )
    if recorded_lot is not None and recorded_lot != lot:
        raise MergeError(
            f"{what}: the latest trained_adapter materialization is lot {recorded_lot}, but its audit trail's latest "
            f"adapter is lot {lot}; re-run the job so both agree"
        )
    adapter_dir = Path(saved["data"].get("adapter_dir") or workspace.stage_dir(job_id, "adapter"))
    expected = dict(saved["data"].get("files") or {})
    found = sha256_tree(adapter_dir) if adapter_dir.is_dir() else {}
    if not found or found != expected:
        changed = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise MergeError(
            f"{what}: the adapter in {adapter_dir} is not the one that was trained and examined "
            f"(files differ: {changed or 'folder missing'}); re-run that job"
        )
    claimed = _read_json(adapter_dir / "adapter_config.json", what).get("base_model_name_or_path")
    if manifest.model_path and claimed and not _same_path(str(claimed), manifest.model_path):
        raise MergeError(
            f"{what}: its adapter_config.json says it was trained on {claimed}, not this job's base {manifest.model_path}"
        )
    train_path = workspace.stage_dir(job_id, "curated") / "train.jsonl"
    exam = {k: verdict.get(k) for k in ("passed", "lot_number", "metrics") if k in verdict}
    exam["seq"] = verdicts[-1]["seq"]
    return JobSource(
        job_id=job_id,
        adapter_dir=adapter_dir,
        weight=weight,
        density=density,
        lot_number=lot,
        adapter_files=found,
        exam=exam,
        train_path=train_path if train_path.is_file() else None,
    )


def resolve_job_sources(
    manifest: TrainingManifest,
    *,
    workspace: Workspace,
    trail_for: Callable[[str], AuditTrail],
    recorded_lots: dict[str, str | None] | None = None,
) -> list[JobSource]:
    """Every `job:` source of the manifest, checked; one MergeError lists every source that cannot be merged.

    `recorded_lots` (optional) maps a source job to the lot number its latest `trained_adapter` materialization
    recorded (the Dagster layer passes it), which must agree with the audit trail.
    """
    sources, problems = [], []
    for source in manifest.merge.sources:
        if source.job is None:
            continue
        try:
            sources.append(
                _job_source(
                    source.job,
                    source.weight,
                    source.density,
                    manifest=manifest,
                    workspace=workspace,
                    trail=trail_for(source.job),
                    recorded_lot=(recorded_lots or {}).get(source.job),
                )
            )
        except MergeError as e:
            problems.append(str(e))
    if problems:
        raise MergeError("; ".join(problems))
    return sources


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
