"""Merging on real tiny models: PEFT folds, mergekit DARE-TIES, provenance, determinism and refusals."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.alchemist import (
    AdapterRef,
    MergeResult,
    merge_adapters,
)
from foundry_assets.chat_template import DEFAULT_CHAT_TEMPLATE
from foundry_assets.demo.tiny_model import CHAT_TEMPLATE, build_tiny_llama
from foundry_assets.errors import MergeError
from foundry_assets.hashing import sha256_file
from foundry_assets_tests.adapters import make_adapter, peft_merged_state

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """LoRA and DoRA adapters with seeded weights, plus DoRA twins whose magnitudes are the base norms."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "lora_a": make_adapter(tiny_model_dir, root / "lora_a", seed=1),
        "lora_b": make_adapter(tiny_model_dir, root / "lora_b", seed=2),
        "dora_a": make_adapter(tiny_model_dir, root / "dora_a", seed=3, use_dora=True),
        "dora_b": make_adapter(tiny_model_dir, root / "dora_b", seed=4, use_dora=True),
        "dora_a_reset": make_adapter(
            tiny_model_dir, root / "dora_a_reset", seed=3, use_dora=True, perturb_magnitude=False
        ),
        "dora_b_reset": make_adapter(
            tiny_model_dir, root / "dora_b_reset", seed=4, use_dora=True, perturb_magnitude=False
        ),
    }


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def _dare(
    base: Path,
    a: Path,
    b: Path,
    out: Path,
    *,
    seed: int = 0,
    normalize: bool = True,
) -> MergeResult:
    refs = [
        AdapterRef(a, weight=1.0, density=0.5, name="a"),
        AdapterRef(b, weight=0.5, density=0.7, name="b"),
    ]
    return merge_adapters(base_model=base, adapters=refs, out_dir=out, seed=seed, normalize=normalize)


@pytest.mark.parametrize("kind", ["lora_a", "dora_a"])
def test_fold_of_one_adapter_equals_peft_merge(
    kind: str, tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    result = merge_adapters(
        base_model=tiny_model_dir, adapters=[AdapterRef(adapters[kind])], out_dir=tmp_path / "m"
    )
    assert result.method == "fold"
    model = AutoModelForCausalLM.from_pretrained(str(result.out_dir), dtype=torch.float32)
    AutoTokenizer.from_pretrained(str(result.out_dir))
    expected = peft_merged_state(tiny_model_dir, adapters[kind])
    got = model.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    base = _weights(tiny_model_dir)
    assert not torch.equal(
        got["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )
    assert result.sources[0]["name"] == kind
    assert result.files == {p.name: sha256_file(p) for p in result.out_dir.iterdir()}


def test_dare_ties_merge_loads_generates_and_records_sources(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    result = _dare(tiny_model_dir, adapters["dora_a"], adapters["lora_b"], tmp_path / "merged")
    assert result.method == "dare_ties"
    tokenizer = AutoTokenizer.from_pretrained(str(result.out_dir))
    model = AutoModelForCausalLM.from_pretrained(str(result.out_dir), dtype=torch.float32).eval()
    inputs = tokenizer("The quick brown fox", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4

    base, merged = _weights(tiny_model_dir), _weights(result.out_dir)
    assert set(base) == set(merged)
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)

    assert [s["name"] for s in result.sources] == ["a", "b"]
    for source, key in zip(result.sources, ["dora_a", "lora_b"], strict=True):
        assert source["path"] == str(adapters[key].resolve())
        assert source["sha256"]["adapter_model.safetensors"] == sha256_file(
            adapters[key] / "adapter_model.safetensors"
        )
        assert source["sha256"]["adapter_config.json"] == sha256_file(adapters[key] / "adapter_config.json")
    assert [s["density"] for s in result.sources] == [0.5, 0.7]
    assert result.files == {p.name: sha256_file(p) for p in result.out_dir.iterdir()}
    metadata = result.to_metadata()
    assert metadata["method"] == "dare_ties" and len(metadata["sources"]) == 2


def test_config_sets_density_and_normalize_and_seed_is_deterministic(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    first = _dare(tiny_model_dir, adapters["lora_a"], adapters["lora_b"], tmp_path / "one" / "m", seed=7)
    again = _dare(tiny_model_dir, adapters["lora_a"], adapters["lora_b"], tmp_path / "two" / "m", seed=7)
    # no LoRA cache or other intermediate copy of the model is left beside the output
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["m"]
    other = _dare(tiny_model_dir, adapters["lora_a"], adapters["lora_b"], tmp_path / "three" / "m", seed=8)
    assert first.files == again.files
    assert first.files["model.safetensors"] != other.files["model.safetensors"]

    assert first.config["merge_method"] == "dare_ties"
    assert first.config["random_seed"] == 7 and first.config["device"] == "cpu"
    assert first.config["dtype"] == first.dtype == "float32"  # the tiny base is float32
    assert first.config["parameters"]["normalize"] is True
    assert [m["parameters"]["density"] for m in first.config["models"]] == [0.5, 0.7]
    assert [m["parameters"]["weight"] for m in first.config["models"]] == [1.0, 0.5]
    assert all("+" in m["model"] for m in first.config["models"])
    written = (first.out_dir / "mergekit_config.yml").read_text()
    assert "density: 0.5" in written and "normalize: true" in written
    # the shipped configuration names the base and the adapters, never this node's folders (issue 14)
    shipped = yaml.safe_load(written)
    assert shipped["base_model"] == tiny_model_dir.name
    assert str(tmp_path) not in written and str(tiny_model_dir.parent) not in written
    assert [m["model"] for m in shipped["models"]] == [
        f"{tiny_model_dir.name}+a",
        f"{tiny_model_dir.name}+b",
    ]

    unnormalized = _dare(
        tiny_model_dir,
        adapters["lora_a"],
        adapters["lora_b"],
        tmp_path / "four" / "m",
        seed=7,
        normalize=False,
    )
    assert unnormalized.config["parameters"]["normalize"] is False
    assert unnormalized.files["model.safetensors"] != first.files["model.safetensors"]


def test_dora_merge_keeps_trained_magnitudes(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    trained = _dare(tiny_model_dir, adapters["dora_a"], adapters["dora_b"], tmp_path / "trained" / "m")
    reset = _dare(
        tiny_model_dir, adapters["dora_a_reset"], adapters["dora_b_reset"], tmp_path / "reset" / "m"
    )
    got, ref = _weights(trained.out_dir), _weights(reset.out_dir)
    name = "model.layers.1.mlp.down_proj.weight"
    assert not torch.allclose(got[name], ref[name])
    # the untouched norms and embeddings do not depend on DoRA magnitudes
    assert torch.equal(got["model.embed_tokens.weight"], ref["model.embed_tokens.weight"])


def test_existing_output_is_replaced_whole(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    merge_adapters(base_model=tiny_model_dir, adapters=[AdapterRef(adapters["lora_a"])], out_dir=out)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_missing_adapter_fails_before_any_output(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    refs = [AdapterRef(adapters["lora_a"], name="good"), AdapterRef(tmp_path / "nowhere", name="ghost")]
    with pytest.raises(MergeError, match=r"'ghost'.*does not exist"):
        merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "out" / "m")
    assert not (tmp_path / "out").exists()


def test_unreadable_and_empty_inputs_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="no adapters"):
        merge_adapters(base_model=tiny_model_dir, adapters=[], out_dir=tmp_path / "m")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(MergeError, match=r"'broken'.*cannot be read"):
        merge_adapters(base_model=tiny_model_dir, adapters=[AdapterRef(broken)], out_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_adapter_for_another_architecture_is_refused(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    other_base = build_tiny_llama(tmp_path / "narrow", hidden_size=32)
    foreign = make_adapter(other_base, tmp_path / "foreign", seed=5)
    refs = [AdapterRef(adapters["lora_a"], name="ours"), AdapterRef(foreign, name="foreign")]
    with pytest.raises(MergeError, match=r"'foreign'.*different architecture"):
        merge_adapters(base_model=tiny_model_dir, adapters=refs, out_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --- merge sources that are other jobs -------------------------------------------------------------------------


def _with_template(adapter: Path, tiny_model_dir: Path, folder: Path, template: str) -> Path:
    """A copy of `adapter` with the tokenizer the crucible saves beside it, carrying `template`."""
    shutil.copytree(adapter, folder)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(folder))
    return folder


def test_the_merged_model_ships_the_adapters_template_and_stops_at_its_end_of_turn(
    tiny_model_dir: Path, adapters: dict[str, Path], tmp_path: Path
) -> None:
    """mergekit would ship the base's tokenizer; the merged model carries the template the adapters trained with, and
    its generation config stops at that template's end-of-turn token (here '<unk>', not the eos_token '</s>')."""
    template = DEFAULT_CHAT_TEMPLATE.replace("eos_token", "'<unk>'")
    a = _with_template(adapters["lora_a"], tiny_model_dir, tmp_path / "a", template)
    b = _with_template(adapters["lora_b"], tiny_model_dir, tmp_path / "b", template)
    fold = merge_adapters(base_model=tiny_model_dir, adapters=[AdapterRef(a)], out_dir=tmp_path / "fold")
    dare = _dare(tiny_model_dir, a, b, tmp_path / "dare")
    for result in (fold, dare):
        out = result.out_dir
        assert AutoTokenizer.from_pretrained(str(out)).chat_template == template
        assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 3]
        assert result.config["end_of_turn_token_id"] == 3
        assert result.files["generation_config.json"] == sha256_file(out / "generation_config.json")
        assert result.config["tokenizer_from"] == str(a.resolve())

    other = _with_template(adapters["lora_b"], tiny_model_dir, tmp_path / "other", CHAT_TEMPLATE)
    with pytest.raises(MergeError, match="different chat templates"):
        _dare(tiny_model_dir, a, other, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
