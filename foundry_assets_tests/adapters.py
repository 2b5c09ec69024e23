"""Test helpers: seeded non-zero LoRA/DoRA adapters on the tiny Llama, saved as PEFT writes them."""

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    use_dora: bool = False,
    perturb_magnitude: bool = True,
    scale: float = 0.2,
    rank: int = 4,
) -> Path:
    """Save an adapter whose A/B (and, for DoRA, magnitude) weights are seeded random, non-zero values.

    With `perturb_magnitude=False` the DoRA magnitudes keep PEFT's initial value: the base weight norms.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=TARGET_MODULES, use_dora=use_dora, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
            elif "lora_magnitude_vector" in name:
                factor = 1 + 0.3 * torch.randn(param.shape, generator=generator)
                if perturb_magnitude:
                    param.mul_(factor)
    peft_model.save_pretrained(str(out_dir))
    return out_dir


def peft_merged_state(base_dir: Path, adapter_dir: Path) -> dict[str, "torch.Tensor"]:
    """PEFT's own merge_and_unload of one adapter: the reference a fold must equal."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}
