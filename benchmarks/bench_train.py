"""Training speed and memory: HF transformers + PEFT + TRL vs a plain Unsloth loop vs the foundry's crucible.

    python benchmarks/bench_train.py          # one GPU machine, one command; table on stdout, bench.json in $OUT

Same model (random-init Llama-3.2-1B shape, built here), same data (random-word texts truncated to the sequence
length, so every sequence is full), LoRA rank 16 on all seven projections, sequence 2048, batch 4, bf16, fused AdamW,
no gradient checkpointing (the crucible's default), for LoRA, QLoRA and DoRA. Every run is a fresh process; tokens/s
is measured after 3 warm-up steps (Unsloth compiles during the first), peak is `torch.cuda.max_memory_allocated`.
Two extra crucible rows: LoRA with TRL's per-step token metrics (the crucible before the change) and LoRA with
gradient checkpointing allowed. Targets: crucible ≥ 0.95x plain Unsloth tokens/s, ≥ 1.6x HF's, ≤ 0.5x HF's peak;
a second job's start-up (process start → first step) ≤ 30 s.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import run_child

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-bench-out")
MODEL_DIR = Path(os.environ.get("FOUNDRY_GPU_MODEL_DIR", "/tmp/models/llama-3.2-1b"))
SEQ, BATCH = 2048, 4
STEPS, WARMUP = int(os.environ.get("BENCH_STEPS", "16")), 3
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "490"))  # skip what would not finish inside one device call
os.environ.setdefault("FOUNDRY_COMPILE_CACHE", "/tmp/foundry-compile-cache")
# a subset, e.g. after the GPU end-to-end run: BENCH_METHODS=lora,qlora BENCH_ARMS=unsloth_loop,crucible BENCH_EXTRA=0
METHODS = os.environ.get("BENCH_METHODS", "lora,qlora,dora").split(",")
ARM_KINDS = os.environ.get("BENCH_ARMS", "hf_trl,unsloth_loop,crucible").split(",")

ARMS = [("hf_trl", "HF+PEFT+TRL"), ("unsloth_loop", "plain Unsloth"), ("crucible", "crucible")]
EXTRA = [
    ("lora", {"token_metrics": True}, "crucible, TRL token metrics (before)"),
    ("lora", {"gc": True}, "crucible, gradient checkpointing"),
]


def spec(kind: str, method: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "method": method,
        "seq": SEQ,
        "batch": BATCH,
        "steps": STEPS,
        "warmup": WARMUP,
        "model_dir": str(MODEL_DIR),
        **extra,
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"build: {run_child({'kind': 'build', 'arch': 'llama-3.2-1b', 'model_dir': str(MODEL_DIR)})}",
        flush=True,
    )
    plan = [(method, kind, label, {}) for method in METHODS for kind, label in ARMS if kind in ARM_KINDS]
    if (
        os.environ.get("BENCH_PADDED") == "1"
    ):  # same-call A/B of padding-free batches (Unsloth's choice) vs padded
        plan += [(m, "crucible", "crucible, padded", {"padding_free": False}) for m in METHODS]
    if (
        os.environ.get("BENCH_REPEAT") == "1"
    ):  # the same plan again in reverse order: process-to-process spread
        plan += plan[::-1]
    if os.environ.get("BENCH_EXTRA", "1") != "0":
        plan += [(method, "crucible", label, extra) for method, extra, label in EXTRA]
    results: list[dict[str, Any]] = []
    for method, kind, label, extra in plan:
        if time.perf_counter() - t0 > BUDGET_S:
            results.append({**spec(kind, method, **extra), "label": label, "error": "skipped: out of time"})
            continue
        result = {**run_child(spec(kind, method, **extra)), "label": label}
        results.append(result)
        print(
            f"[{time.perf_counter() - t0:4.0f}s] {method} {label}: {result.get('tokens_per_s')} tok/s, "
            f"{result.get('peak_gib')} GiB, first step at {result.get('first_step_s')} s "
            f"{result.get('startup_timings_s', '')} {result.get('error', '')[-2000:]}",
            flush=True,
        )
        (OUT / "bench.json").write_text(json.dumps({"results": results}, indent=1))
    versions = _versions()
    (OUT / "bench.json").write_text(json.dumps({"results": results, "versions": versions}, indent=1))
    print(versions)
    print(table(results))
    return 0


def table(results: list[dict[str, Any]]) -> str:
    by = {(r["method"], r["label"]): r for r in results}
    rows = [
        "| method | stack | tokens/s | peak GiB | vs plain Unsloth tok/s | vs HF tok/s | vs HF peak | first step (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['method']} | {r['label']} | error: {r['error'][-80:]!r} | | | | | |")
            continue
        hf, plain = by.get((r["method"], "HF+PEFT+TRL"), {}), by.get((r["method"], "plain Unsloth"), {})
        rows.append(
            f"| {r['method']} | {r['label']} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.2f} | "
            f"{_ratio(r.get('tokens_per_s'), plain.get('tokens_per_s'))} | {_ratio(r.get('tokens_per_s'), hf.get('tokens_per_s'))} | "
            f"{_ratio(r.get('peak_gib'), hf.get('peak_gib'))} | {r.get('first_step_s')} |"
        )
    return "\n".join(rows)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ["torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "triton"]:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "-"
    try:
        import torch

        versions["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    except ImportError:
        versions["device"] = "none"
    return versions


if __name__ == "__main__":
    sys.exit(main())
