"""Model loading for the crucible: Unsloth's `FastLanguageModel`, or transformers + PEFT where Unsloth is absent.

Both backends return a PEFT model with LoRA/DoRA adapters on every linear projection and its tokenizer; the
strategy decides DoRA and 4-bit. No TRL here: the strategy builds the trainer.
"""

import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from foundry_assets.crucible.hardware import HardwareReport
from foundry_assets.crucible.params import TrainParams
from foundry_assets.crucible.strategies import TrainingStrategy
from foundry_assets.errors import TrainingError

logger = logging.getLogger(__name__)

Backend = Literal["unsloth", "peft"]
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_PATCHED_BY_UNSLOTH = ("transformers", "trl", "peft")
COMPILE_CACHE_ENV = "FOUNDRY_COMPILE_CACHE"
"""Folder for Unsloth's generated modules and torch.compile/Triton caches; default FOUNDRY_HOME/cache/compile."""


def compile_cache_dir() -> Path:
    """Where compiled kernels persist between jobs on this node (`FOUNDRY_COMPILE_CACHE`, else under FOUNDRY_HOME)."""
    if configured := os.environ.get(COMPILE_CACHE_ENV):
        return Path(configured).expanduser().resolve()
    from foundry_assets.workspace import default_root

    return default_root().resolve() / "cache" / "compile"


def use_persistent_compile_cache() -> Path:
    """Point Unsloth's and torch's compile caches at one persistent folder; must run before unsloth is imported.

    A second job on the same node then loads the first job's Inductor/Triton artifacts instead of compiling
    again (README: start-up ≤ 30 s). Variables the operator already set are left alone. The folders are made
    owner-only: Unsloth's Mega-cache refuses group- or world-writable folders.
    """
    root = compile_cache_dir()
    wanted = {
        "UNSLOTH_COMPILE_LOCATION": root / "unsloth_compiled_cache",
        "UNSLOTH_MEGA_CACHE_DIR": root / "mega_cache",
        "TORCHINDUCTOR_CACHE_DIR": root / "inductor",
        "TRITON_CACHE_DIR": root / "triton",
    }
    for variable, folder in wanted.items():
        if variable not in os.environ:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.environ[variable] = str(folder)
    return root


def ensure_unsloth_first() -> bool:
    """Import unsloth (before transformers/trl/peft, or its patches are not applied); False where it can't import.

    Only a missing package counts as "can't import": any other error (for example
    `UNSLOTH_DISABLE_CPU_FALLBACK=1` on a host with no GPU) is raised, never turned into a fallback.
    """
    if "unsloth" in sys.modules and sys.modules["unsloth"] is not None:
        return True
    early = [name for name in _PATCHED_BY_UNSLOTH if name in sys.modules]
    if early:
        logger.warning(
            "%s imported before unsloth: Unsloth's patches may not apply; import foundry_assets.crucible.train "
            "and call ensure_unsloth_first() before them.",
            ", ".join(early),
        )
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")  # no usage ping to the network
    use_persistent_compile_cache()
    try:
        import unsloth  # noqa: F401
    except ImportError as error:
        logger.warning("Unsloth cannot be imported (%s); the PEFT backend will be used.", error)
        return False
    return True


def load_with_adapters(
    backend: Backend,
    *,
    model_path: str,
    strategy: TrainingStrategy,
    params: "TrainParams",
    hardware: HardwareReport,
) -> tuple[Any, Any]:
    """Load the base model for `strategy` on the reported device and wrap it with fresh adapters."""
    if backend == "unsloth":
        return _load_unsloth(model_path, strategy, params, hardware)
    _check_trl_runs_on(strategy, hardware)
    return _load_peft(model_path, strategy, params, hardware)


def _check_trl_runs_on(strategy: TrainingStrategy, hardware: HardwareReport) -> None:
    """Fail fast where TRL's SFTTrainer cannot run: its fused LM head is a Triton kernel (CUDA/XPU only).

    Unsloth's CPU backend reroutes that kernel to a torch implementation on import; without Unsloth an SFT
    strategy on a CPU host would die inside `train()` with Triton's "0 active drivers".
    """
    if hardware.device != "cpu" or strategy.data_format != "sft":
        return
    from trl.trainer import utils as trl_utils

    kernel = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not getattr(
        kernel, "_unsloth_cpu_dispatch", False
    ):  # the Triton kernel, or None where Triton is missing
        raise TrainingError(
            f"{strategy.name()} cannot train on the CPU with the PEFT backend: TRL's SFTTrainer computes its loss "
            "with a Triton kernel that needs a CUDA/XPU device. Install unsloth (its CPU backend replaces that "
            "kernel) or run on a GPU node."
        )


def _dtype(hardware: HardwareReport) -> Any:
    import torch

    if hardware.device == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if hardware.device == "cuda":
        return torch.float16
    return torch.float32


def _load_unsloth(
    model_path: str, strategy: TrainingStrategy, params: "TrainParams", hardware: HardwareReport
) -> tuple[Any, Any]:
    import unsloth
    from unsloth import FastLanguageModel

    loaded_for = "cpu" if unsloth.DEVICE_TYPE == "cpu" else "cuda"
    if loaded_for != hardware.device:
        raise TrainingError(
            f"Unsloth started its {unsloth.DEVICE_TYPE} backend but the hardware report says {hardware.device}; "
            "use the device Unsloth found (device='auto'), or backend='peft'."
        )
    checkpointing: str | bool = "unsloth" if hardware.gradient_checkpointing else False
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_path,
        max_seq_length=params.max_seq_length,
        dtype=_dtype(hardware),
        load_in_4bit=strategy.load_in_4bit,
        use_gradient_checkpointing=checkpointing,
        random_state=params.seed,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=params.rank,
        lora_alpha=params.alpha or params.rank,
        lora_dropout=params.dropout,
        target_modules=list(TARGET_MODULES),
        use_dora=strategy.use_dora,
        bias="none",
        random_state=params.seed,
        use_gradient_checkpointing=checkpointing,
        max_seq_length=params.max_seq_length,
    )
    return model, tokenizer


def _load_peft(
    model_path: str, strategy: TrainingStrategy, params: "TrainParams", hardware: HardwareReport
) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = _dtype(hardware)
    quantization = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        if strategy.load_in_4bit
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        dtype=dtype,
        device_map="cpu" if hardware.device == "cpu" else {"": torch.cuda.current_device()},
        **({"quantization_config": quantization} if quantization is not None else {}),
    )
    model.config.use_cache = False
    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=hardware.gradient_checkpointing
        )
    elif hardware.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(params.seed)
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha or params.rank,
        lora_dropout=params.dropout,
        target_modules=list(TARGET_MODULES),
        use_dora=strategy.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config), tokenizer


def count_quantized_layers(model: Any) -> int:
    """How many bitsandbytes 4-bit linear layers the model holds (0 for a 16/32-bit model)."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    return sum(1 for module in model.modules() if isinstance(module, bnb.nn.Linear4bit))
