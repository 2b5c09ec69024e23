"""ORPO's step weighting at Llama-3.1-8B shape on Unsloth's CUDA path: `python benchmarks/gpu_orpo_steps.py`.

A step's pairs trained as one padded batch, then as length-grouped micro-batches of different sizes (a token budget,
grad_accum set to their number): the crucible weights each micro-batch's ORPO terms by its share of the step's chosen
tokens and pairs (`crucible.batching.step_weighted_orpo_trainer`), so each step's loss should be the padded batch's to
bf16 precision, and the run records how many micro-batches it weighted. The peer is the padded batch in the same run.

Real-length pairs (`real_lengths.rows`: log-normal, median 250, p95 910, cut at 1,024; chosen and rejected drawn
independently), PAIRS of them, every step all of them; rank 16 on all linear layers, bf16, Unsloth's gradient
checkpointing; each arm a fresh process. The base is FOUNDRY_GPU_MODEL_DIR, built with random-init weights if missing
(no hub). Writes orpo_steps.json under $OUT and prints a table.
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import run_child

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-gpu-out")
ARCH = os.environ.get("FOUNDRY_GPU_ARCH", "llama-3.1-8b")
MODEL_DIR = Path(os.environ.get("FOUNDRY_GPU_MODEL_DIR", f"/tmp/models/{ARCH}"))
DEVICE = os.environ.get("FOUNDRY_GPU_DEVICE", "cuda")  # "cpu" with FOUNDRY_GPU_ARCH=tiny: a smoke test here
PAIRS, STEPS, BUDGET = 8, 3, 2048


def arm(**changes: Any) -> dict[str, Any]:
    spec = {
        "kind": "crucible_real",
        "method": "orpo",
        "model_dir": str(MODEL_DIR),
        "device": DEVICE,
        "lengths": {"texts": PAIRS, "median": 250, "p95": 910, "max_len": 1024, "seed": 7},
        "steps": STEPS,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "gc": True,
        "batch": PAIRS,
        "work": "/tmp/foundry-orpo-steps",
        **changes,
    }
    result = run_child(spec, timeout=900)
    print(json.dumps({k: v for k, v in result.items() if k != "lengths"})[:1500], flush=True)
    if "error" in result:
        raise SystemExit(f"{changes or 'padded'}: {result['error']}")
    return result


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if not (MODEL_DIR / "config.json").is_file():
        print(
            run_child({"kind": "build", "arch": ARCH, "model_dir": str(MODEL_DIR)}, timeout=900), flush=True
        )
    padded = arm()
    grouping = {"batching": "length_grouped", "token_budget": BUDGET, "steps": 1}
    count = arm(**grouping)["batching"]["micro_batches_per_epoch"]
    grouped = arm(**{**grouping, "steps": STEPS, "grad_accum": count})
    (OUT / "orpo_steps.json").write_text(json.dumps({"padded": padded, "grouped": grouped}, indent=1))
    lengths = padded["lengths"]
    print(f"\n{ARCH} shape, ORPO, {PAIRS} pairs a step (rendered lengths: {lengths}), {STEPS} steps")
    print(f"grouped: {count} micro-batches at token_budget {BUDGET}, batching record {grouped['batching']}")
    print("| step | padded batch loss | grouped micro-batches loss | relative difference |")
    print("|---|---|---|---|")
    for (step, a), (_, b) in zip(padded["losses"], grouped["losses"], strict=True):
        print(f"| {step} | {a:.5f} | {b:.5f} | {abs(b - a) / abs(a):.2e} |")
    print("| arm | peak GiB | padding share | useful tok/s |")
    print("|---|---|---|---|")
    for name, r in (("padded batch", padded), ("grouped", grouped)):
        peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(f"| {name} | {peak} | {r['padding_share']:.3f} | {r['tokens_per_s']} |")


if __name__ == "__main__":
    main()
