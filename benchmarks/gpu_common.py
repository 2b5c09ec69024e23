"""One training run per fresh process, for the GPU suite and the benchmark: `python gpu_common.py '<json spec>'`.

Kinds: `build` (the random-init real-shape Llama), `crucible` (foundry_assets.crucible.train_adapter),
`unsloth_loop` (FastLanguageModel + a bare PyTorch loop) and `hf_trl` (transformers + PEFT + TRL's SFTTrainer, no
Unsloth in the process). Each prints one `RESULT {json}` line: tokens/s after warm-up, peak allocated GiB and the
time from process start to the end of the first optimizer step. No Dagster here: the GPU image has none.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GIB = 1024**3
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "river",
    "stone",
    "cloud",
    "light",
    "north",
]


def texts(n: int, seq_len: int, seed: int = 0) -> list[str]:
    """`n` texts long enough to be truncated at `seq_len` tokens by the demo tokenizer (≥ 1 token per 2 chars)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) + str(rng.randint(0, 99)) for _ in range(seq_len)) for _ in range(n)]


def turn(role: str, content: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content}]


def completions(n: int, seq_len: int) -> list[dict[str, Any]]:
    """SFT rows as the curator writes them (TRL's conversational prompt-completion format)."""
    return [
        {"prompt": turn("user", f"Question {i}: continue the list."), "completion": turn("assistant", t)}
        for i, t in enumerate(texts(n, seq_len))
    ]


def preference(n: int, seq_len: int) -> list[dict[str, Any]]:
    chosen, rejected = texts(n, seq_len, seed=1), texts(n, seq_len, seed=2)
    return [
        {
            "prompt": turn("user", f"Question {i}: continue the list."),
            "chosen": turn("assistant", c),
            "rejected": turn("assistant", r),
        }
        for i, (c, r) in enumerate(zip(chosen, rejected, strict=True))
    ]


def run_child(spec: dict[str, Any], timeout: float = 420) -> dict[str, Any]:
    """Run `spec` in a fresh interpreter; return its RESULT, or an error record with the tail of its output."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {**spec, "error": (done.stdout[-1500:] + "\n" + done.stderr[-2500:]).strip(), "wall_s": 0.0}
    if "PROFILE " in done.stdout:
        start = done.stdout.index("PROFILE ")
        spec = {**spec, "profile": done.stdout[start : done.stdout.index("RESULT ", start)]}
    return {**spec, **json.loads(lines[-1][7:]), "wall_s": round(time.perf_counter() - started, 1)}


def vram_table(runs: list[dict[str, Any]], arch_name: str, model_dir: Path) -> None:
    """Each crucible run's measured peak allocated GiB beside `estimate_vram`'s, as a markdown table."""
    from foundry_assets.crucible.vram import estimate_vram, resolve_architecture

    arch, _ = resolve_architecture(arch_name, str(model_dir))
    print("| config | measured GiB | estimate GiB | error % |")
    print("|---|---|---|---|")
    for r in runs:
        label = f"{r['method']} seq {r['seq']} batch {r['batch']}{' gc' if r['gc'] else ''}"
        if "error" in r:
            print(f"| {label} | ERROR | | |")
            continue
        est = estimate_vram(
            arch,
            method=r["method"],
            rank=16,
            batch_size=r["batch"],
            seq_len=r["seq"],
            gradient_checkpointing=r["gc"],
        ).total_gib
        print(
            f"| {label} | {r['peak_gib']:.2f} | {est:.2f} | {100 * (est - r['peak_gib']) / r['peak_gib']:+.1f} |"
        )


def _peak() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None


def build(spec: dict[str, Any]) -> dict[str, Any]:
    from foundry_assets.crucible.vram import KNOWN_ARCHITECTURES
    from foundry_assets.demo.tiny_model import build_random_llama, build_tiny_llama

    if spec["arch"] == "tiny":  # the tests' two-layer Llama: a CPU smoke check of the scripts
        return {"model_dir": str(build_tiny_llama(spec["model_dir"]))}
    out = build_random_llama(spec["model_dir"], KNOWN_ARCHITECTURES[spec["arch"]])
    return {"model_dir": str(out)}


def crucible(spec: dict[str, Any]) -> dict[str, Any]:
    from foundry_assets.crucible.params import TrainParams
    from foundry_assets.crucible.train import ensure_unsloth_first, train_adapter

    assert ensure_unsloth_first(), "unsloth did not import"
    if os.environ.get("FOUNDRY_PROFILE_STEPS"):
        _install_trainer_profiler()
    if os.environ.get("FOUNDRY_DROP_FULL_MASK"):
        _drop_full_attention_masks()
    import torch

    from foundry_assets.crucible.hardware import HardwareReport

    method, seq, batch = spec["method"], spec["seq"], spec["batch"]
    device = spec.get("device", "cuda")  # "cpu": a smoke test of this script on the tiny model
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    hardware = HardwareReport(device, name, None, None, bool(spec.get("gc", False)))
    examples: list[dict[str, Any]]
    if method == "orpo":
        examples = preference(max(16, batch * 4), seq)
    else:
        examples = completions(max(16, batch * 4), seq)
    params = TrainParams(
        rank=spec.get("rank", 16),
        alpha=None,
        dropout=0.0,
        learning_rate=2e-4,
        max_steps=spec["steps"],
        max_seq_length=seq,
        logging_steps=spec.get("logging_steps", 10),
        seed=0,
        batch_size=batch,
        grad_accum=1,
        optim=spec.get("optim", "adamw_torch_fused"),
        token_metrics=bool(spec.get("token_metrics", False)),
        padding_free=spec.get("padding_free"),  # None: the crucible's choice
    )
    out = (
        Path(spec.get("work", "/tmp/foundry-gpu"))
        / f"{method}-{seq}-{batch}-{int(time.time_ns())}"
        / "adapter"
    )
    result = train_adapter(
        model_path=spec["model_dir"],
        strategy_name=method,
        train_examples=examples,
        out_dir=out,
        params=params,
        hardware=hardware,
        backend="unsloth",
    )
    meta = result.to_metadata()
    return {
        "backend": result.backend,
        "tokens_per_s": meta["steady_tokens_per_s"],
        "tokens_per_s_with_first_step": meta["tokens_per_s"],
        "peak_gib": result.peak_memory_gib,
        "padding_share": result.padding_share,
        "tokens_per_step": round(result.tokens / max(result.steps_run, 1)),
        "first_step_s": _first_step_s(result),
        "steps": result.steps,
        "final_loss": meta["final_loss"],
        "changed_params": result.changed_params,
        "startup_timings_s": result.timings,
        "dynamo_graphs": _dynamo_graphs(),
    }


def _dynamo_graphs() -> int:
    """How many graphs torch.compile built in this process (0: no compiled region ran, e.g. no per-block compile)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _first_step_s(result: Any) -> float | None:
    return None if result.first_step_at is None else round(result.first_step_at - PROCESS_START, 2)


class _Timer:
    """Steady-state timing of a bare loop: synchronise after `warmup` steps and after the last one."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t_first, self.t_warm = warmup, 0.0, 0.0

    def step_done(self, step: int) -> None:
        import torch

        if step in (1, self.warmup) and torch.cuda.is_available():
            torch.cuda.synchronize()
        if step == 1:
            self.t_first = time.perf_counter()
        if step == self.warmup:
            self.t_warm = time.perf_counter()


LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
"""Every linear layer of a Llama block: what each arm's r16 LoRA/DoRA adapts, as the crucible does."""


def unsloth_peft_model(spec: dict[str, Any], max_len: int) -> tuple[Any, Any]:
    """(model, tokenizer): Unsloth's FastLanguageModel of `spec["model_dir"]` (4-bit for qlora) with an r16 adapter
    (DoRA for dora) on LINEAR_MODULES, as the plain-Unsloth arms run it, with the crucible's compile cache."""
    from foundry_assets.crucible.backend import use_persistent_compile_cache

    use_persistent_compile_cache()  # the same compile cache the crucible uses: start-up is not what is compared
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    import torch
    from unsloth import FastLanguageModel

    method, device = spec["method"], spec.get("device", "cuda")
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec["model_dir"],
        max_seq_length=max_len,
        dtype=torch.bfloat16 if device == "cuda" else torch.float32,
        load_in_4bit=method == "qlora",
        use_gradient_checkpointing=False,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=LINEAR_MODULES,
        use_dora=method == "dora",
        bias="none",
        use_gradient_checkpointing=False,
        random_state=0,
        max_seq_length=max_len,
    )
    return model, tokenizer


def unsloth_loop(spec: dict[str, Any]) -> dict[str, Any]:
    seq, batch, steps, warmup = spec["seq"], spec["batch"], spec["steps"], spec["warmup"]
    device = spec.get("device", "cuda")
    model, _ = unsloth_peft_model(spec, seq)
    import torch

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4, fused=device == "cuda")
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(10, 4000, (batch, seq), generator=generator) for _ in range(4)]
    timer = _Timer(warmup)
    profiler = StepProfiler() if os.environ.get("FOUNDRY_PROFILE_STEPS") else None
    for step in range(1, steps + 1):
        if profiler is not None:
            profiler.step()
        ids = batches[step % len(batches)].to(device, non_blocking=True)
        mask = (
            {"attention_mask": torch.ones_like(ids)} if os.environ.get("FOUNDRY_LOOP_ATTENTION_MASK") else {}
        )
        loss = model(input_ids=ids, labels=ids, **mask).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.step_done(step)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - timer.t_warm
    return {
        "backend": "unsloth",
        "tokens_per_s": round(batch * seq * (steps - warmup) / elapsed, 1),
        "peak_gib": _peak(),
        "first_step_s": round(timer.t_first - PROCESS_START, 2),
        "steps": steps,
        "final_loss": float(loss),
        "trainable_dtypes": sorted({str(p.dtype) for p in params}),
        "dynamo_graphs": _dynamo_graphs(),
    }


def hf_trl(spec: dict[str, Any]) -> dict[str, Any]:
    sys.modules["unsloth"] = None  # type: ignore[assignment]  # keep Unsloth's patches out of this process
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from foundry_assets.crucible.telemetry import SpeedMeter

    method, seq, batch, steps, warmup = (
        spec["method"],
        spec["seq"],
        spec["batch"],
        spec["steps"],
        spec["warmup"],
    )
    quant = (
        BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        if method == "qlora"
        else None
    )
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_dir"],
        dtype=torch.bfloat16,
        device_map={"": 0},
        attn_implementation="sdpa",
        **({"quantization_config": quant} if quant else {}),
    )
    if quant:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    config = LoraConfig(
        r=16,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_dora=method == "dora",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    args = SFTConfig(
        output_dir="/tmp/hf-trl",
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        logging_steps=10,
        bf16=True,
        gradient_checkpointing=False,  # same setting as the crucible's default (checkpointing only when short)
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        max_length=seq,
        dataset_text_field="text",
        packing=False,
        optim="adamw_torch_fused",
    )
    data = Dataset.from_list([{"text": t} for t in texts(max(16, batch * 4), seq)])
    trainer = SFTTrainer(model=peft_model, processing_class=tokenizer, train_dataset=data, args=args)
    meter = SpeedMeter(grad_accum=1, warmup_steps=warmup)
    trainer.add_callback(meter.callback())
    trainer.data_collator = meter.wrap_collator(trainer.data_collator)
    trainer.train()
    return {
        "backend": "hf+peft+trl",
        "tokens_per_s": meter.steady_tokens_per_s(),
        "peak_gib": _peak(),
        "first_step_s": None
        if meter.first_step_at is None
        else round(meter.first_step_at - PROCESS_START, 2),
        "steps": meter.steps_run,
        "final_loss": None,
    }


def _real_length(name: str) -> Any:
    """A real-length arm (`real_lengths.py`), imported only by the child that runs it."""

    def run(spec: dict[str, Any]) -> dict[str, Any]:
        import real_lengths

        return dict(getattr(real_lengths, name)(spec, PROCESS_START))

    return run


KINDS = {
    "build": build,
    "crucible": crucible,
    "unsloth_loop": unsloth_loop,
    "hf_trl": hf_trl,
    "hf_trl_real": _real_length("hf_trl_real"),
    "unsloth_trl_real": _real_length("unsloth_trl_real"),
    "crucible_real": _real_length("crucible_real"),
}


class StepProfiler:
    """torch.profiler over steps `start`..`start + count - 1` of whatever calls `step()`; prints the top CUDA ops."""

    def __init__(self, start: int = 4, count: int = 3) -> None:
        self.start, self.count, self.calls = start, count, 0
        self.prof: Any = None

    def step(self) -> None:
        import torch

        self.calls += 1
        if self.calls == self.start:
            self.prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            )
            self.prof.__enter__()
        elif self.calls == self.start + self.count and self.prof is not None:
            torch.cuda.synchronize()
            self.prof.__exit__(None, None, None)
            table = self.prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=14, max_name_column_width=60
            )
            print(f"PROFILE steps {self.start}-{self.start + self.count - 1}\n{table}", flush=True)
            self.prof = None


def _drop_full_attention_masks() -> None:
    """Experiment: batches whose attention mask is all ones go to the model without one (as the plain loop does)."""
    from foundry_assets.crucible import telemetry

    original = telemetry.SpeedMeter.wrap_collator

    def wrap_collator(self: Any, collate: Any) -> Any:
        counting = original(self, collate)

        def collate_without_full_mask(features: Any) -> Any:
            batch = counting(features)
            mask = batch.get("attention_mask")
            if mask is not None and bool(mask.all()):
                del batch["attention_mask"]
            return batch

        return collate_without_full_mask

    telemetry.SpeedMeter.wrap_collator = wrap_collator  # type: ignore[method-assign]


def _install_trainer_profiler() -> None:
    """Profile the crucible's HF Trainer steps (FOUNDRY_PROFILE_STEPS set by the spec's env)."""
    from transformers import Trainer

    profiler, original = StepProfiler(), Trainer.training_step

    def training_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        profiler.step()
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step  # type: ignore[method-assign]


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    job = json.loads(sys.argv[1])
    os.environ.update(job.get("env", {}))  # e.g. UNSLOTH_MIXED_PRECISION, set before anything imports Unsloth
    result = KINDS[job["kind"]](job)
    print("RESULT " + json.dumps(result), flush=True)
