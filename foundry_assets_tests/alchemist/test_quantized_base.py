"""A pre-quantized bitsandbytes 4-bit base (like `unsloth/llama-3-8b-bnb-4bit`): merges go into its dequantized
16-bit weights and come out as a plain 16-bit model. bitsandbytes 0.50.2 quantizes, saves and dequantizes NF4 on the
CPU, so these run without a GPU."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from foundry_assets.alchemist import AdapterRef, merge_adapters
from foundry_assets.demo.tiny_model import build_tiny_llama
from foundry_assets.errors import MergeError
from foundry_assets_tests.adapters import make_adapter
from foundry_assets_tests.alchemist.mergekit_reference import weights

pytestmark = pytest.mark.slow


def _dequantized(bnb4_dir: Path) -> AutoModelForCausalLM:
    model = AutoModelForCausalLM.from_pretrained(str(bnb4_dir), device_map="cpu")
    return model.dequantize(dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def dequantized_dir(bnb4_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 4-bit base dequantized by transformers and saved as an ordinary bf16 folder: the reference base."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("models") / "tiny-llama-dequantized"
    model = _dequantized(bnb4_model_dir)
    model.config.save_pretrained(str(out))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _assert_plain_16bit(folder: Path, reference: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    got = weights(folder)
    expected = weights(reference)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert (
        type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    )  # nothing of bitsandbytes is needed
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    inputs = tokenizer("The quick brown fox", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 2


def test_the_base_folder_is_prequantized(bnb4_model_dir: Path) -> None:
    config = json.loads((bnb4_model_dir / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"
    assert config["quantization_config"]["load_in_4bit"] is True
    with safe_open(str(bnb4_model_dir / "model.safetensors"), framework="pt") as handle:
        assert handle.get_slice("model.layers.0.self_attn.q_proj.weight").get_shape() == [
            2048,
            1,
        ]  # 64×64 packed
        assert "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4" in handle.keys()  # noqa: SIM118


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_fold_into_4bit_base_is_the_fold_of_its_dequantized_weights(
    kind: str, bnb4_model_dir: Path, dequantized_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    from peft import PeftModel

    result = merge_adapters(
        base_model=bnb4_model_dir, adapters=[AdapterRef(merge_sources[kind])], out_dir=tmp_path / "m"
    )
    assert result.method == "fold" and result.dtype == "bfloat16"
    assert result.config["dequantized_4bit_base"] is True
    _assert_plain_16bit(result.out_dir, dequantized_dir)
    merged = PeftModel.from_pretrained(
        _dequantized(bnb4_model_dir), str(merge_sources[kind])
    ).merge_and_unload()
    expected = merged.state_dict()
    got = weights(result.out_dir)
    for name, tensor in got.items():
        assert torch.equal(tensor, expected[name]), name
    base = weights(dequantized_dir)
    assert not torch.equal(
        got["model.layers.0.mlp.down_proj.weight"], base["model.layers.0.mlp.down_proj.weight"]
    )


def test_dare_ties_on_4bit_base_equals_dare_ties_on_its_dequantized_weights(
    bnb4_model_dir: Path, dequantized_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    refs = [
        AdapterRef(merge_sources["lora"], weight=1.0, density=0.5, name="lora"),
        AdapterRef(merge_sources["dora"], weight=0.5, density=0.7, name="dora"),
    ]
    on_4bit = merge_adapters(base_model=bnb4_model_dir, adapters=refs, out_dir=tmp_path / "q", seed=4)
    on_16bit = merge_adapters(base_model=dequantized_dir, adapters=refs, out_dir=tmp_path / "d", seed=4)
    assert on_4bit.method == "dare_ties" and on_4bit.dtype == on_4bit.config["dtype"] == "bfloat16"
    _assert_plain_16bit(on_4bit.out_dir, dequantized_dir)
    got, expected = weights(on_4bit.out_dir), weights(on_16bit.out_dir)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


def test_adapter_for_another_architecture_is_refused_on_4bit_base(
    bnb4_model_dir: Path, merge_sources: dict[str, Path], tmp_path: Path
) -> None:
    """The shape check reads the 4-bit base's logical shapes (from its config), not the packed ones."""
    foreign = make_adapter(
        build_tiny_llama(tmp_path / "narrow", hidden_size=32), tmp_path / "foreign", seed=5
    )
    refs = [AdapterRef(merge_sources["lora"], name="ours"), AdapterRef(foreign, name="foreign")]
    with pytest.raises(MergeError, match=r"'foreign'.*different architecture"):
        merge_adapters(base_model=bnb4_model_dir, adapters=refs, out_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()
