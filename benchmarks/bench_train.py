"""Training speed and memory: HF transformers + PEFT + TRL vs plain Unsloth vs the foundry's crucible.

    python benchmarks/bench_train.py                      # full rows: one GPU, table on stdout, bench.json in $OUT
    python benchmarks/bench_train.py --lengths real       # real lengths (issue 17), same model
    python benchmarks/bench_train.py --lengths real --gpus 4   # one method per GPU at once (one device call)
    python benchmarks/bench_train.py --lengths real --tiny     # CPU smoke check of the real-length set (tiny model)

Full rows (`--lengths full`, the default): random-init Llama-3.2-1B shape (built here), random-word texts truncated to
the sequence length, so every sequence is full; LoRA rank 16 on all seven projections, sequence 2048, batch 4, bf16,
fused AdamW, no gradient checkpointing (the crucible's default), for LoRA, QLoRA and DoRA. Every run is a fresh
process; tokens/s is measured after 3 warm-up steps (Unsloth compiles during the first), peak is
`torch.cuda.max_memory_allocated`. Two extra crucible rows: LoRA with TRL's per-step token metrics and LoRA with
gradient checkpointing allowed. Targets: crucible ≥ 0.95x plain Unsloth tokens/s, ≥ 1.6x HF's, ≤ 0.5x HF's peak.

Real lengths (`--lengths real`): the same model and adapters on 4,000 conversational rows whose rendered lengths are
log-normal (median 250 tokens, p95 910, mean about 340, cut to 2,048; `real_lengths.py`, the measured distribution is
printed), for lora, qlora, dora and orpo: HF+PEFT+TRL padded (TRL's default, batch 8) and with `packing=True` (SFT),
plain Unsloth at its best settings (its SFTTrainer with packing; ORPO padded), and the crucible with token-budget
batching (`length_grouped`, and `packed` for SFT) at --budget tokens per micro-batch (default 16,384: what HF's
packing puts in one step, 8 rows of 2,048). Useful tokens/s counts non-padding tokens after the warm-up steps.
Targets (issue 17): crucible ≥ 2x HF+PEFT+TRL with packing (ORPO: HF padded), ≥ 0.6x the full-row tokens/s of the
same method, peak ≤ the HF packed arm's.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import run_child

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-bench-out")
BUDGET_S = float(os.environ.get("BENCH_BUDGET_S", "490"))  # skip what would not finish inside one device call
os.environ.setdefault("FOUNDRY_COMPILE_CACHE", "/tmp/foundry-compile-cache")

ARMS = [("hf_trl", "HF+PEFT+TRL"), ("unsloth_loop", "plain Unsloth"), ("crucible", "crucible")]
EXTRA = [
    ("lora", {"token_metrics": True}, "crucible, TRL token metrics (before)"),
    ("lora", {"gc": True}, "crucible, gradient checkpointing"),
]
# (arm name, child kind, label, spec extras, SFT only)
REAL_ARMS: list[tuple[str, str, str, dict[str, Any], bool]] = [
    ("hf_padded", "hf_trl_real", "HF+PEFT+TRL, padded", {}, False),
    ("hf_packed", "hf_trl_real", "HF+PEFT+TRL, packing=True", {"packing": True}, True),
    ("unsloth", "unsloth_trl_real", "plain Unsloth (SFT packing=True, ORPO padded)", {}, False),
    ("crucible_grouped", "crucible_real", "crucible, length_grouped", {"batching": "length_grouped"}, False),
    ("crucible_packed", "crucible_real", "crucible, packed", {"batching": "packed"}, True),
    ("crucible_examples", "crucible_real", "crucible, batches of 8 examples (as shipped)", {}, False),
    ("crucible_full", "crucible", "crucible, full rows", {}, False),
]
DEFAULT_REAL_ARMS = "hf_padded,hf_packed,unsloth,crucible_grouped,crucible_packed,crucible_full"
GPU_SHAPE = {
    "arch": "llama-3.2-1b",
    "model_dir": os.environ.get("FOUNDRY_GPU_MODEL_DIR", "/tmp/models/llama-3.2-1b"),
}
TINY_SHAPE = {"arch": "tiny", "model_dir": "/tmp/foundry-bench-tiny"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", choices=["full", "real"], default="full")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke check: the tests' tiny Llama, a few steps"
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated (default: lora,qlora,dora[,orpo for real])"
    )
    parser.add_argument("--arms", default=None, help=f"real-length arms (default {DEFAULT_REAL_ARMS})")
    parser.add_argument(
        "--budget", type=int, default=None, help="crucible tokens per micro-batch (real lengths)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps after the warm-up")
    parser.add_argument(
        "--gpus", type=int, default=1, help="run methods on this many GPUs at once (one lane each)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.tiny and args.lengths != "real":
        raise SystemExit("--tiny smoke-checks the real-length set: add --lengths real")
    OUT.mkdir(parents=True, exist_ok=True)
    shape = TINY_SHAPE if args.tiny else GPU_SHAPE
    print(f"build: {run_child({'kind': 'build', **shape})}", flush=True)
    plan = real_plan(args, shape) if args.lengths == "real" else full_plan(args, shape)
    results = run_lanes(plan, lanes=max(1, args.gpus), cpu=args.tiny)
    versions = _versions()
    (OUT / "bench.json").write_text(json.dumps({"results": results, "versions": versions}, indent=1))
    print(versions)
    print(real_table(results) if args.lengths == "real" else table(results))
    return 0


def full_plan(args: argparse.Namespace, shape: dict[str, str]) -> list[dict[str, Any]]:
    """The full-row set (issue 4): every sequence 2048 tokens, batch 4."""
    steps = args.steps or int(os.environ.get("BENCH_STEPS", "16"))
    methods = (args.methods or os.environ.get("BENCH_METHODS", "lora,qlora,dora")).split(",")
    kinds = os.environ.get("BENCH_ARMS", "hf_trl,unsloth_loop,crucible").split(",")
    base = {
        "seq": 64 if args.tiny else 2048,
        "batch": 4,
        "steps": steps,
        "warmup": 3,
        "model_dir": shape["model_dir"],
    }
    base |= {"device": "cpu"} if args.tiny else {}
    plan = [(m, kind, label, {}) for m in methods for kind, label in ARMS if kind in kinds]
    if os.environ.get("BENCH_PADDED") == "1":  # same-call A/B of padding-free batches vs padded
        plan += [(m, "crucible", "crucible, padded", {"padding_free": False}) for m in methods]
    if (
        os.environ.get("BENCH_REPEAT") == "1"
    ):  # the same plan again in reverse order: process-to-process spread
        plan += plan[::-1]
    if os.environ.get("BENCH_EXTRA", "1") != "0":
        plan += [(m, "crucible", label, extra) for m, extra, label in EXTRA]
    return [{**base, "kind": kind, "method": m, "label": label, **extra} for m, kind, label, extra in plan]


def real_plan(args: argparse.Namespace, shape: dict[str, str]) -> list[dict[str, Any]]:
    """The real-length set (issue 17): every method's arms on the same log-normal-length rows."""
    methods = (args.methods or "lora,qlora,dora,orpo").split(",")
    arms = (args.arms or DEFAULT_REAL_ARMS).split(",")
    unknown = sorted(set(arms) - {name for name, *_ in REAL_ARMS})
    if unknown:
        raise SystemExit(f"unknown --arms {unknown}; known: {', '.join(name for name, *_ in REAL_ARMS)}")
    if args.tiny:  # lengths a quarter of the real ones: the tiny model on two CPU cores
        lengths = {"texts": 256, "median": 62, "p95": 228, "max_len": 512, "seed": 0}
        base = {"batch": 4, "steps": args.steps or 4, "warmup": 1, "device": "cpu"}
        budget = args.budget or 2048
    else:
        lengths = {"texts": 4000, "median": 250, "p95": 910, "max_len": 2048, "seed": 0}
        base = {"batch": 8, "steps": args.steps or 20, "warmup": 3}
        budget = args.budget or 16384
    plan = []
    for method in methods:
        for name, kind, label, extra, sft_only in REAL_ARMS:
            if name not in arms or (sft_only and method == "orpo"):
                continue
            if kind == "crucible":  # the same method on full rows, for the real-to-full ratio
                full = {
                    "seq": 64 if args.tiny else 2048,
                    "batch": 4,
                    "steps": 16 if not args.tiny else base["steps"],
                }
                label = f"{label} ({full['seq']} x {full['batch']})"
                plan.append({**base, **full, "kind": kind, "method": method, "arm": name, "label": label})
                plan[-1]["model_dir"] = shape["model_dir"]
                continue
            budgeted = {"token_budget": budget} if "batching" in extra else {}
            plan.append(
                {
                    **base,
                    "kind": kind,
                    "method": method,
                    "arm": name,
                    "label": label + (f" @ {budget:,} tokens" if budgeted else ""),
                    "lengths": lengths,
                    "model_dir": shape["model_dir"],
                    **extra,
                    **budgeted,
                }
            )
    return plan


def run_lanes(plan: list[dict[str, Any]], *, lanes: int, cpu: bool) -> list[dict[str, Any]]:
    """Run `plan`, a method's runs in order on one lane (GPU), lanes at once; each run a fresh process."""
    methods = list(dict.fromkeys(spec["method"] for spec in plan))
    per_lane: list[list[tuple[int, dict[str, Any]]]] = [[] for _ in range(lanes)]
    for k, method in enumerate(methods):
        per_lane[k % lanes] += [(key, spec) for key, spec in enumerate(plan) if spec["method"] == method]
    results: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    lock = threading.Lock()

    def lane(index: int) -> None:
        env = {} if cpu or lanes == 1 else {"CUDA_VISIBLE_DEVICES": str(index)}
        if lanes > 1:  # Unsloth's compile cache is one folder per lane: concurrent writers would race
            env["FOUNDRY_COMPILE_CACHE"] = f"{os.environ['FOUNDRY_COMPILE_CACHE']}-lane{index}"
        for key, spec in per_lane[index]:
            if time.perf_counter() - t0 > BUDGET_S:
                result = {**spec, "error": "skipped: out of time"}
            else:
                result = {
                    **run_child({**spec, "env": {**spec.get("env", {}), **env}}),
                    "label": spec["label"],
                }
            with lock:
                results[key] = result
                print(
                    f"[{time.perf_counter() - t0:4.0f}s lane {index}] {spec['method']} {spec['label']}: "
                    f"{result.get('tokens_per_s')} tok/s, {result.get('peak_gib')} GiB, padding "
                    f"{result.get('padding_share')}, first step at {result.get('first_step_s')} s "
                    f"{result.get('error', '')[-2000:]}",
                    flush=True,
                )
                done = [results[k] for k in sorted(results)]
                (OUT / "bench.json").write_text(json.dumps({"results": done}, indent=1))

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes) if per_lane[i]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[k] for k in sorted(results)]


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
            f"| {r['method']} | {r['label']} | {_num(r.get('tokens_per_s'))} | {_num(r.get('peak_gib'), 2)} | "
            f"{_ratio(r.get('tokens_per_s'), plain.get('tokens_per_s'))} | "
            f"{_ratio(r.get('tokens_per_s'), hf.get('tokens_per_s'))} | "
            f"{_ratio(r.get('peak_gib'), hf.get('peak_gib'))} | {r.get('first_step_s')} |"
        )
    return "\n".join(rows)


def real_table(results: list[dict[str, Any]]) -> str:
    """The real-length table: useful tokens/s against HF's packed arm (ORPO: HF padded), peak, padding."""
    by = {(r["method"], r.get("arm")): r for r in results}
    lines = []
    for kind in ("sft", "preference"):
        stats = next(
            (
                r["lengths"]
                for r in results
                if "lengths" in r and (r["method"] == "orpo") == (kind == "preference")
            ),
            None,
        )
        if stats:
            what = "answers+prompt of chosen and rejected" if kind == "preference" else "rows"
            lines.append(
                f"{kind} data: {stats['texts']} {what}, {stats['drawn']}; measured median {stats['median']}, "
                f"p95 {stats['p95']}, mean {stats['mean']}, max {stats['max']} tokens"
            )
    lines += [
        "",
        "| method | arm | useful tok/s | vs HF packed (orpo: padded) | vs HF padded | vs full rows | peak GiB "
        "| peak vs HF packed | padding | tokens/step | first step (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['label']} | error: {r['error'][-100:]!r} | | | | | | | | |")
            continue
        padded, full = by.get((r["method"], "hf_padded"), {}), by.get((r["method"], "crucible_full"), {})
        packed = by.get((r["method"], "hf_packed"), {}) if r["method"] != "orpo" else padded
        share = r.get("padding_share")
        lines.append(
            f"| {r['method']} | {r['label']} | {_num(r.get('tokens_per_s'))} | "
            f"{_ratio(r.get('tokens_per_s'), packed.get('tokens_per_s'))} | "
            f"{_ratio(r.get('tokens_per_s'), padded.get('tokens_per_s'))} | "
            f"{_ratio(r.get('tokens_per_s'), full.get('tokens_per_s'))} | {_num(r.get('peak_gib'), 2)} | "
            f"{_ratio(r.get('peak_gib'), packed.get('peak_gib'))} | "
            f"{'-' if share is None else f'{100 * share:.0f}%'} | {_num(r.get('tokens_per_step'))} | "
            f"{r.get('first_step_s')} |"
        )
    return "\n".join(lines)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


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
    sys.exit(main(sys.argv[1:]))
