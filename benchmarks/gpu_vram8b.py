"""VRAM estimator against measured peaks at Llama-3.1-8B shape, every strategy: `python benchmarks/gpu_vram8b.py`.

Each configuration trains 4 steps of the crucible (Unsloth, full-length rows) in a fresh process on a random-init
8B-shaped base (FOUNDRY_GPU_MODEL_DIR, built with `gpu_common.py build` if missing); the four strategies of a round
share the GPU at once (peak *allocated* memory is counted per process, so sharing does not change it). Prints
measured peak allocated beside `estimate_vram` and the error; writes vram8b.json under $OUT.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import run_child, vram_table

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-gpu-out")
ARCH = os.environ.get("FOUNDRY_GPU_ARCH", "llama-3.1-8b")
MODEL_DIR = Path(os.environ.get("FOUNDRY_GPU_MODEL_DIR", "/tmp/e2e-base"))
ROUNDS = [
    [("lora", 1024, 2, False), ("qlora", 1024, 2, False), ("dora", 1024, 2, False), ("orpo", 512, 2, False)],
    [("lora", 2048, 4, True), ("qlora", 2048, 4, True), ("dora", 2048, 2, True), ("orpo", 1024, 2, True)],
]


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FOUNDRY_COMPILE_CACHE", "/tmp/foundry-compile-cache")
    t0 = time.perf_counter()
    if not (MODEL_DIR / "config.json").exists():
        print(run_child({"kind": "build", "arch": ARCH, "model_dir": str(MODEL_DIR)}), flush=True)
    runs: list[dict[str, Any]] = []
    rounds = int(os.environ.get("FOUNDRY_VRAM_ROUNDS", len(ROUNDS)))
    for round_ in ROUNDS[:rounds]:
        specs = [
            {
                "kind": "crucible",
                "method": m,
                "seq": s,
                "batch": b,
                "gc": gc,
                "steps": 4,
                "model_dir": str(MODEL_DIR),
            }
            for m, s, b, gc in round_
        ]
        with ThreadPoolExecutor(len(specs)) as pool:
            runs += list(pool.map(run_child, specs))
        print(f"[{time.perf_counter() - t0:5.0f}s] round done", flush=True)
    (OUT / "vram8b.json").write_text(json.dumps(runs, indent=1))
    print(f"\n{ARCH} shape: peak allocated (4 crucible steps, full-length rows) against estimate_vram")
    vram_table(runs, ARCH, MODEL_DIR)
    for r in runs:
        if "error" in r:
            print(f"ERROR {r['method']}: {r['error'][-1500:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
