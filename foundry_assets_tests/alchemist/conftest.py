"""Bases and adapters shared by the merge tests: the tiny Llama as bf16 and as a bitsandbytes 4-bit folder."""

import shutil
from pathlib import Path

import pytest

from foundry_assets.alchemist import TOKENIZER_FILES
from foundry_assets_tests.adapters import make_adapter


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


@pytest.fixture(scope="session")
def bf16_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama saved in bfloat16 (an 8B base's dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("models") / "tiny-llama-bf16"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    model.save_pretrained(str(out))
    _copy_tokenizer(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def bnb4_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama pre-quantized to bitsandbytes NF4 on the CPU and saved, like `unsloth/llama-3-8b-bnb-4bit`."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    out = tmp_path_factory.mktemp("models") / "tiny-llama-bnb-4bit"
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_model_dir), quantization_config=quant, device_map="cpu", dtype=torch.bfloat16
    )
    model.save_pretrained(str(out))
    _copy_tokenizer(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def merge_sources(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seeded LoRA and DoRA adapters made on the tiny base, and one whose task vector is zero everywhere."""
    root = tmp_path_factory.mktemp("merge-sources")
    return {
        "lora": make_adapter(tiny_model_dir, root / "lora", seed=11),
        "lora_2": make_adapter(tiny_model_dir, root / "lora_2", seed=12),
        "dora": make_adapter(tiny_model_dir, root / "dora", seed=13, use_dora=True),
        "zero": make_adapter(tiny_model_dir, root / "zero", seed=14, scale=0.0),
    }
