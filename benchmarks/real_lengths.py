"""The real-length arm set of `bench_train.py`: data whose lengths look like instruction data, and the stacks on it.

Lengths are log-normal (by default median 250 tokens, 95th percentile 910, mean about 340; 4,000 texts, cut at 2,048)
and measured as the whole rendered row (chat template, prompt and answer) in the model's tokenizer. A preference row
draws its chosen and rejected answers' lengths independently. Every arm trains on the same rows, TRL's
conversational prompt-completion / preference format (completion-only loss), in a fresh process:

- `hf_trl`: transformers + PEFT + TRL with no Unsloth in the process, padded (TRL's default) or `packing=True` (bfd,
  rows of max_length, padding-free; SFT only, TRL cannot pack preference pairs); ORPO through `trl.experimental.orpo`.
- `unsloth_trl`: Unsloth's FastLanguageModel and its patched TRL trainer at Unsloth's best settings for this data
  (`packing=True`, which Unsloth runs padding-free with its varlen attention; ORPO padded).
- `crucible`: `foundry_assets.crucible.train_adapter` with `batching` length_grouped or packed at `token_budget`.

Useful tokens are the batches' non-padding tokens (`crucible.telemetry.SpeedMeter`), counted after the warm-up steps.
"""

import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
Z95 = 1.6448536269514722
PROMPT = "Question {i}: continue the list."


def lognormal_lengths(count: int, median: float, p95: float, max_len: int, seed: int) -> list[int]:
    """`count` row lengths (tokens) from the log-normal with this median and 95th percentile, cut to [32, max_len]."""
    mu, sigma = math.log(median), math.log(p95 / median) / Z95
    rng = random.Random(seed)
    return [min(max_len, max(32, round(rng.lognormvariate(mu, sigma)))) for _ in range(count)]


def describe(lengths: list[int]) -> dict[str, Any]:
    ordered = sorted(lengths)
    return {
        "texts": len(ordered),
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        "mean": round(statistics.fmean(ordered), 1),
        "max": ordered[-1],
        "tokens": sum(ordered),
    }


WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "light", "north", "omega"]


def _answer(tokenizer: Any, rng: random.Random, tokens: int) -> str:
    """Random words cut to `tokens` tokens of `tokenizer` (within a token or two once re-tokenized)."""
    words = " ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(tokens))
    ids = tokenizer(words, add_special_tokens=False)["input_ids"][: max(1, tokens)]
    return str(tokenizer.decode(ids)).strip()


def _overhead(tokenizer: Any) -> int:
    """Tokens a row has besides its answer's: template, prompt, headers, end-of-turn."""
    turns = [{"role": "user", "content": PROMPT.format(i=0)}, {"role": "assistant", "content": "x"}]
    return _rendered(tokenizer, turns) - len(tokenizer("x", add_special_tokens=False)["input_ids"])


def rows(
    tokenizer: Any, spec: dict[str, Any], *, preference: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The benchmark's rows for `spec["lengths"]` and the measured distribution of their rendered lengths."""
    ls = spec["lengths"]
    count, seed, max_len = ls["texts"], ls.get("seed", 0), ls["max_len"]
    overhead = _overhead(tokenizer)
    targets = lognormal_lengths(count, ls["median"], ls["p95"], max_len, seed)
    second = lognormal_lengths(count, ls["median"], ls["p95"], max_len, seed + 1) if preference else targets
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    measured: list[int] = []
    for i, (a, b) in enumerate(zip(targets, second, strict=True)):
        prompt = [{"role": "user", "content": PROMPT.format(i=i)}]
        first = [{"role": "assistant", "content": _answer(tokenizer, rng, a - overhead)}]
        if preference:
            other = [{"role": "assistant", "content": _answer(tokenizer, rng, b - overhead)}]
            out.append({"prompt": prompt, "chosen": first, "rejected": other})
            measured += [_rendered(tokenizer, prompt + first), _rendered(tokenizer, prompt + other)]
        else:
            out.append({"prompt": prompt, "completion": first})
            measured.append(_rendered(tokenizer, prompt + first))
    stats = describe(measured)
    stats["drawn"] = f"log-normal, median {ls['median']}, p95 {ls['p95']}, cut to [32, {max_len}] tokens"
    return out, stats


def _rendered(tokenizer: Any, turns: list[dict[str, str]]) -> int:
    """Tokens of the conversation as the chat template renders it."""
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _meter(trainer: Any, warmup: int) -> Any:
    from foundry_assets.crucible.telemetry import SpeedMeter

    meter = SpeedMeter(grad_accum=1, warmup_steps=warmup)
    trainer.add_callback(meter.callback())
    trainer.data_collator = meter.wrap_collator(trainer.data_collator)
    return meter


def _measured(meter: Any, started: float, **extra: Any) -> dict[str, Any]:
    import torch

    steps = max(meter.steps_run, 1)
    return {
        "tokens_per_s": meter.steady_tokens_per_s(),
        "peak_gib": torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else None,
        "padding_share": meter.padding_share,
        "tokens_per_step": round(meter.tokens / steps),
        "first_step_s": None if meter.first_step_at is None else round(meter.first_step_at - started, 2),
        "steps": meter.steps_run,
        **extra,
    }


def _trl_args(spec: dict[str, Any], device: str, output_dir: str, preference: bool, **extra: Any) -> Any:
    common = {
        "output_dir": output_dir,
        "max_steps": spec["steps"],
        "per_device_train_batch_size": spec["batch"],
        "gradient_accumulation_steps": 1,
        "learning_rate": 2e-4,
        "logging_steps": 10,
        "bf16": device == "cuda",
        "use_cpu": device == "cpu",
        "gradient_checkpointing": False,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "max_length": spec["lengths"]["max_len"],
        "optim": "adamw_torch_fused" if device == "cuda" else "adamw_torch",
        "seed": 0,
        **extra,
    }
    if preference:
        from trl.experimental.orpo import ORPOConfig

        return ORPOConfig(**common, beta=0.1)
    from trl import SFTConfig

    return SFTConfig(**common)


def hf_trl_real(spec: dict[str, Any], started: float) -> dict[str, Any]:
    """transformers + PEFT + TRL, padded or `packing=True`; no Unsloth anywhere in the process."""
    sys.modules["unsloth"] = None  # type: ignore[assignment]
    import torch
    from datasets import Dataset
    from gpu_common import LINEAR_MODULES
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    method, device = spec["method"], spec.get("device", "cuda")
    preference = method == "orpo"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    quant = (
        BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
        if method == "qlora"
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"],
        dtype=dtype,
        device_map={"": 0} if device == "cuda" else "cpu",
        attn_implementation="sdpa",
        **({"quantization_config": quant} if quant else {}),
    )
    if quant:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    data, stats = rows(tokenizer, spec, preference=preference)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=LINEAR_MODULES,
            use_dora=method == "dora",
            task_type="CAUSAL_LM",
        ),
    )
    packing = bool(spec.get("packing"))
    args = _trl_args(spec, device, "/tmp/hf-trl-real", preference, **({"packing": True} if packing else {}))
    if preference:
        from trl.experimental.orpo import ORPOTrainer

        trainer_cls: Any = ORPOTrainer
    else:
        from trl import SFTTrainer

        # TRL's SFT loss is a Triton kernel (CUDA only): the CPU smoke takes the model's own loss instead
        trainer_cls = SFTTrainer if device == "cuda" else _model_loss(SFTTrainer)
    trainer = trainer_cls(
        model=peft_model, processing_class=tokenizer, train_dataset=Dataset.from_list(data), args=args
    )
    meter = _meter(trainer, spec["warmup"])
    trainer.train()
    return _measured(meter, started, backend="hf+peft+trl", lengths=stats)


def _model_loss(base: type) -> type:
    from transformers import Trainer

    class ModelLoss(base):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kw: Any) -> Any:
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs, **kw)

    return ModelLoss


def unsloth_trl_real(spec: dict[str, Any], started: float) -> dict[str, Any]:
    """Unsloth as its users run it on short data: FastLanguageModel + its SFTTrainer with packing (ORPO padded)."""
    from gpu_common import unsloth_peft_model

    device, preference = spec.get("device", "cuda"), spec["method"] == "orpo"
    model, tokenizer = unsloth_peft_model(spec, spec["lengths"]["max_len"])
    from datasets import Dataset

    data, stats = rows(tokenizer, spec, preference=preference)
    args = _trl_args(
        spec, device, "/tmp/unsloth-real", preference, **({} if preference else {"packing": True})
    )
    if preference:
        from trl.experimental.orpo import ORPOTrainer

        trainer_cls: Any = ORPOTrainer
    else:
        from trl import SFTTrainer

        trainer_cls = SFTTrainer
    trainer = trainer_cls(
        model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(data), args=args
    )
    meter = _meter(trainer, spec["warmup"])
    trainer.train()
    return _measured(
        meter, started, backend="unsloth", lengths=stats, packing=bool(getattr(args, "packing", False))
    )


def crucible_real(spec: dict[str, Any], started: float) -> dict[str, Any]:
    """The crucible (`train_adapter`) with token-budget batching on the same rows."""
    from foundry_assets.crucible.train import ensure_unsloth_first, train_adapter

    assert ensure_unsloth_first(), "unsloth did not import"
    import torch
    from transformers import AutoTokenizer

    from foundry_assets.crucible.hardware import HardwareReport
    from foundry_assets.crucible.params import TrainParams

    method, device = spec["method"], spec.get("device", "cuda")
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    data, stats = rows(tokenizer, spec, preference=method == "orpo")
    batching = spec.get("batching", "examples")
    params = TrainParams(
        rank=16,
        alpha=None,
        dropout=0.0,
        learning_rate=spec.get("learning_rate", 2e-4),
        max_steps=spec["steps"],
        max_seq_length=spec["lengths"]["max_len"],
        logging_steps=spec.get("logging_steps", 10),
        seed=0,
        batch_size=spec["batch"],
        grad_accum=spec.get("grad_accum", 1),
        optim="adamw_torch_fused",
        batching=batching,
        token_budget=spec.get("token_budget") if batching != "examples" else None,
    )
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    result = train_adapter(
        model_path=spec["model_dir"],
        strategy_name=method,
        train_examples=data,
        out_dir=Path(spec.get("work", "/tmp/foundry-gpu")) / f"{method}-real-{time.time_ns()}" / "adapter",
        params=params,
        hardware=HardwareReport(device, name, None, None, bool(spec.get("gc", False))),
        backend="unsloth",
    )
    meta = result.to_metadata()
    steps = max(result.steps_run, 1)
    return {
        "backend": result.backend,
        "tokens_per_s": meta["steady_tokens_per_s"],
        "peak_gib": result.peak_memory_gib,
        "padding_share": result.padding_share,
        "tokens_per_step": round(result.tokens / steps),
        "first_step_s": None if result.first_step_at is None else round(result.first_step_at - started, 2),
        "steps": result.steps,
        "final_loss": meta["final_loss"],
        "losses": meta["losses"],
        "batching": result.batching,
        "lengths": stats,
    }
