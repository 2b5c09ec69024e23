"""The streamed DARE-TIES against mergekit's own run_merge, its DARE draw, its output dtype and shards."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from foundry_assets.alchemist import AdapterRef, dare_ties_config, merge_adapters
from foundry_assets.alchemist.checkpoint import BaseCheckpoint, BaseReader
from foundry_assets.alchemist.dare_ties import AdapterDeltas, merge_tensor, tensor_seed
from foundry_assets_tests.adapters import peft_merged_state
from foundry_assets_tests.alchemist.mergekit_reference import run_mergekit, weights

pytestmark = pytest.mark.slow

LAYER = "model.layers.1.self_attn.q_proj.weight"


def _touched(name: str) -> bool:
    return name.endswith("_proj.weight")


@pytest.mark.parametrize("normalize", [True, False])
def test_streamed_dare_ties_equals_mergekit_run_merge(
    normalize: bool, tiny_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    """Density 1 (no random drop): the same numbers as mergekit's run_merge with `BASE+ADAPTER` references."""
    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=1.0, name="lora"),
        AdapterRef(merge_sources["dora"], weight=0.5, density=1.0, name="dora"),
    ]
    ours = merge_adapters(
        base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "ours", normalize=normalize, seed=3
    )
    config = dare_ties_config(tiny_model_dir, refs, normalize=normalize, dtype="float32")
    assert {k: v for k, v in ours.config.items() if k in config} == config
    theirs = run_mergekit(config, tmp_path / "mergekit", seed=3, cache_dir=tmp_path / "lora-cache")

    got, ref, base = weights(ours.out_dir), weights(theirs), weights(tiny_model_dir)
    assert set(got) == set(ref) == set(base)
    for name in ref:
        assert got[name].dtype == ref[name].dtype == torch.float32, name
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)
    assert sum(not torch.equal(got[k], base[k]) for k in base) == 14  # every targeted projection moved
    assert all(torch.equal(got[k], base[k]) for k in base if not _touched(k))  # the rest copied through


def test_dare_drops_one_minus_density_rescales_and_is_seeded(
    tiny_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    """One real source at density 0.3 beside one whose task vector is zero: what is left is DARE's draw alone."""
    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=0.3, name="lora"),
        AdapterRef(merge_sources["zero"], weight=1.0, density=1.0, name="zero"),
    ]

    def run(seed: int, out: str) -> dict[str, torch.Tensor]:
        result = merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / out, seed=seed)
        return weights(result.out_dir)

    first, again, other = run(5, "one"), run(5, "two"), run(6, "three")
    base = weights(tiny_model_dir)
    full = peft_merged_state(tiny_model_dir, merge_sources["lora"])
    kept = total = 0
    for name in base:
        assert torch.equal(first[name], again[name]), name
        if not _touched(name):
            continue
        assert not torch.equal(first[name], other[name]), name
        got, delta = first[name] - base[name], full[name] - base[name]
        kept += int((got != 0).sum())
        total += got.numel()
        # mergekit's DARE rescale keeps each task vector's l1 norm
        torch.testing.assert_close(got.abs().sum(), delta.abs().sum(), rtol=1e-3, atol=0.0)
        survivors = got != 0  # every kept entry is scaled by the same factor (about 1 / density)
        ratio = got[survivors] / delta[survivors]
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.median())), rtol=1e-3, atol=1e-3)
    assert abs(kept / total - 0.3) < 0.02, kept / total


def test_each_tensor_depends_only_on_the_seed_and_its_name(
    tiny_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    """One tensor merged on its own equals the same tensor of the whole merge: the processing order is irrelevant."""
    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=0.5, name="lora"),
        AdapterRef(merge_sources["dora"], weight=0.7, density=0.6, name="dora"),
    ]
    whole = weights(
        merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "m", seed=9).out_dir
    )
    base = BaseCheckpoint.open(tiny_model_dir, {})
    sources = [AdapterDeltas(r.path, r.label) for r in refs]
    with (
        BaseReader(base, "cpu") as reader,
        sources[0].opened(reader.device),
        sources[1].opened(reader.device),
    ):
        tensor = reader.read(base.files[0], LAYER)
        alone = merge_tensor(
            LAYER,
            tensor,
            [(s.label, s.delta(LAYER, tensor)) for s in sources],
            weights={"lora": 1.0, "dora": 0.7},
            densities={"lora": 0.5, "dora": 0.6},
            normalize=True,
            seed=9,
        )
    assert torch.equal(alone, whole[LAYER])
    assert (
        tensor_seed(9, LAYER) != tensor_seed(9, LAYER.replace("q_proj", "k_proj")) != tensor_seed(10, LAYER)
    )


def test_output_is_written_in_shards_that_load(
    tiny_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = [AdapterRef(merge_sources["lora"], name="a"), AdapterRef(merge_sources["dora"], name="b")]
    whole = merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "whole")
    monkeypatch.setattr("foundry_assets.alchemist.dare_ties.SHARD_BYTES", 64 * 1024)
    sharded = merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "sharded")
    shards = sorted(p.name for p in sharded.out_dir.glob("*.safetensors"))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert "model.safetensors.index.json" in sharded.files
    assert all(p.stat().st_size < 200 * 1024 for p in sharded.out_dir.glob("*.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(str(sharded.out_dir), dtype=torch.float32)
    expected = weights(whole.out_dir)
    assert weights(sharded.out_dir).keys() == expected.keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_bf16_base_gives_bf16_fold_and_dare_ties(
    bf16_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    """A bf16 base merges to bf16 (half the bytes of float32), never a silent float32."""
    from peft import PeftModel

    fold = merge_adapters(
        base_model=bf16_model_dir, adapters=[AdapterRef(merge_sources["dora"])], out_dir=tmp_path / "fold"
    )
    assert fold.dtype == fold.config["dtype"] == "bfloat16" and fold.device == "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(bf16_model_dir), dtype=torch.bfloat16)
    expected = PeftModel.from_pretrained(model, str(merge_sources["dora"])).merge_and_unload().state_dict()
    got = weights(fold.out_dir)
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name

    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=1.0, name="lora"),
        AdapterRef(merge_sources["dora"], weight=0.5, density=1.0, name="dora"),
    ]
    dare = merge_adapters(base_model=bf16_model_dir, adapters=refs, out_dir=tmp_path / "dare")
    assert dare.dtype == dare.config["dtype"] == "bfloat16"
    assert "dtype: bfloat16" in (dare.out_dir / "mergekit_config.yml").read_text()
    assert AutoModelForCausalLM.from_pretrained(str(dare.out_dir)).dtype == torch.bfloat16
    got = weights(dare.out_dir)
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    # the same merge of the same values stored as float32: computed alike, rounded to bf16 once at the end
    widened = tmp_path / "bf16-as-fp32"
    AutoModelForCausalLM.from_pretrained(str(bf16_model_dir), dtype=torch.float32).save_pretrained(
        str(widened)
    )
    full = weights(merge_adapters(base_model=widened, adapters=refs, out_dir=tmp_path / "fp32").out_dir)
    for name, tensor in got.items():
        assert full[name].dtype == torch.float32 and torch.equal(tensor, full[name].to(torch.bfloat16)), name
    fp32_bytes = sum(p.stat().st_size for p in (tmp_path / "fp32").glob("*.safetensors"))
    assert sum(p.stat().st_size for p in dare.out_dir.glob("*.safetensors")) < 0.51 * fp32_bytes


@pytest.mark.gpu
def test_merges_run_on_cuda_and_match_the_cpu(
    bf16_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=1.0, name="lora"),
        AdapterRef(merge_sources["dora"], weight=0.5, density=1.0, name="dora"),
    ]
    for adapters, label in (([AdapterRef(merge_sources["dora"])], "fold"), (refs, "dare")):
        on_gpu = merge_adapters(
            base_model=bf16_model_dir, adapters=adapters, out_dir=tmp_path / f"{label}-cuda", device="cuda"
        )
        on_cpu = merge_adapters(
            base_model=bf16_model_dir, adapters=adapters, out_dir=tmp_path / f"{label}-cpu"
        )
        assert on_gpu.device == "cuda" and on_gpu.dtype == "bfloat16", label
        got, ref = weights(on_gpu.out_dir), weights(on_cpu.out_dir)
        for name, tensor in ref.items():
            assert got[name].dtype == torch.bfloat16
            torch.testing.assert_close(got[name], tensor, rtol=1e-2, atol=1e-2, msg=f"{label} {name}")
