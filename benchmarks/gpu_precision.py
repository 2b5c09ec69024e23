"""Why does DoRA run at half the plain Unsloth loop's speed through the crucible? One GPU call, one table.

The crucible trains through TRL's trainer, which Unsloth sets up with bf16 autocast (mixed precision); the plain
loop runs the bf16 model with no autocast. This runs both, and the crucible with `UNSLOTH_MIXED_PRECISION=bfloat16`
(Unsloth's switch for no autocast), for DoRA, QLoRA and LoRA at sequence 2048, batch 4 (bench_train.py's settings).

    python benchmarks/gpu_precision.py     # table on stdout, precision.json in $OUT
    python benchmarks/gpu_precision.py --padding   # padded vs padding-free batches (DoRA, LoRA, QLoRA)
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import MODEL_DIR, spec
from gpu_common import run_child

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-bench-out")
NO_AUTOCAST = {"UNSLOTH_MIXED_PRECISION": "bfloat16"}
PROFILE = {"FOUNDRY_PROFILE_STEPS": "1"}
Plan = list[tuple[str, str, dict[str, str], str, dict[str, Any]]]
PROFILE_METHOD = os.environ.get("PROFILE_METHOD", "dora")  # --profile's method
PLAN_PROFILE: Plan = [
    (PROFILE_METHOD, "unsloth_loop", PROFILE, "plain Unsloth loop, profiled", {}),
    (PROFILE_METHOD, "crucible", PROFILE, "crucible, profiled", {}),
]
PLAN_MASK: Plan = [
    (
        "dora",
        "unsloth_loop",
        {"FOUNDRY_LOOP_ATTENTION_MASK": "1"},
        "plain Unsloth loop + all-ones attention mask",
        {},
    ),
    ("dora", "crucible", {"FOUNDRY_DROP_FULL_MASK": "1"}, "crucible, all-ones attention mask dropped", {}),
    ("dora", "crucible", {}, "crucible as it is", {}),
]
# `--padding`: Unsloth's SFTTrainer turns padding-free on where `padding_free` is unset (every H100 run), and
# padding-free batches skip Unsloth's per-decoder-layer compile. padding_free=True is the crucible as it was.
PLAN_PADDING: Plan = [
    ("dora", "crucible", {}, "crucible, padded (the fix: DoRA's default)", {}),
    ("dora", "unsloth_loop", {}, "plain Unsloth loop", {}),
    ("dora", "crucible", {}, "crucible, padding-free (as before)", {"padding_free": True}),
    ("lora", "crucible", {}, "crucible, padded", {"padding_free": False}),
    ("lora", "crucible", {}, "crucible, Unsloth's choice (as before, unchanged)", {}),
    ("qlora", "crucible", {}, "crucible, padded", {"padding_free": False}),
]
PLAN: Plan = [
    ("dora", "unsloth_loop", {}, "plain Unsloth loop", {}),
    ("dora", "crucible", {}, "crucible, bf16 autocast", {}),
    ("dora", "crucible", NO_AUTOCAST, "crucible, no autocast", {}),
    ("qlora", "crucible", {}, "crucible, bf16 autocast", {}),
    ("qlora", "crucible", NO_AUTOCAST, "crucible, no autocast", {}),
    ("lora", "crucible", {}, "crucible, bf16 autocast", {}),
    ("lora", "crucible", NO_AUTOCAST, "crucible, no autocast", {}),
]
PLANS = {
    "--profile": PLAN_PROFILE,
    "--mask": PLAN_MASK,
    "--padding": PLAN_PADDING,
    "--padding-others": [row for row in PLAN_PADDING if row[0] != "dora"],  # the LoRA/QLoRA rows alone
}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(
        f"build: {run_child({'kind': 'build', 'arch': 'llama-3.2-1b', 'model_dir': str(MODEL_DIR)})}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    plan = next((plans for flag, plans in PLANS.items() if flag in sys.argv[1:]), PLAN)
    for method, kind, env, label, extra in plan:
        if time.perf_counter() - t0 > float(os.environ.get("BENCH_BUDGET_S", "440")):
            rows.append({"method": method, "label": label, "error": "skipped: out of time"})
            continue
        result = {
            **run_child(
                {**spec(kind, method, steps=8, **extra), "env": env}
                if env is PROFILE
                else {**spec(kind, method, **extra), "env": env}
            ),
            "label": label,
        }
        rows.append(result)
        print(
            f"[{time.perf_counter() - t0:4.0f}s] {method} {label}: {result.get('tokens_per_s')} tok/s "
            f"{result.get('peak_gib')} GiB loss {result.get('final_loss')} {result.get('trainable_dtypes', '')} "
            f"graphs {result.get('dynamo_graphs')} "
            f"{result.get('error', '')[-1500:]}",
            flush=True,
        )
        if "profile" in result:
            print(result["profile"], flush=True)
        (OUT / "precision.json").write_text(json.dumps(rows, indent=1))
    print("| method | run | tokens/s | peak GiB | final loss |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['label']} | {r.get('tokens_per_s', r.get('error', '')[-60:])} | "
            f"{r.get('peak_gib')} | {r.get('final_loss')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
