"""The GPU proof in one command: gpu-marked tests, VRAM calibration and a second job's start-up, then one table.

    python benchmarks/gpu_suite.py            # on a CUDA machine; writes suite.json and logs under $OUT (or /tmp)

1. builds a random-init Llama-3.2-1B-shaped model on the GPU (no download);
2. runs `pytest -m gpu foundry_assets_tests/crucible` (every strategy through Unsloth, qlora's 4-bit layers and
   DoRA's magnitudes on the real-shape model);
3. measures peak allocated memory of the crucible for several configurations and prints it beside
   `estimate_vram` (each run a fresh process; up to three share the GPU at once, which peak *allocated* memory,
   counted per process, does not see);
4. times a second crucible job's start-up (process start → end of the first optimizer step) with the compile
   cache the first jobs filled.
"""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import ROOT, run_child, vram_table

OUT = Path(os.environ.get("OUT") or "/tmp/foundry-gpu-out")
MODEL_DIR = Path(os.environ.get("FOUNDRY_GPU_MODEL_DIR", "/tmp/models/llama-3.2-1b"))
os.environ.setdefault("FOUNDRY_COMPILE_CACHE", "/tmp/foundry-compile-cache")
os.environ["FOUNDRY_GPU_MODEL_DIR"] = str(MODEL_DIR)

# (method, seq, batch, gradient checkpointing); the first runs alone to fill the compile cache
FIRST = ("lora", 2048, 4, False)
ROUNDS = [
    [("qlora", 2048, 4, False), ("lora", 512, 1, False), ("orpo", 512, 2, False), ("dora", 1024, 2, True)],
    [("dora", 2048, 4, False), ("lora", 2048, 4, True), ("qlora", 1024, 2, True), ("orpo", 1024, 2, True)],
]
SPEED_STEPS, SPEED_WARMUP = 24, 3


def spec(method: str, seq: int, batch: int, gc: bool, steps: int = 4) -> dict[str, Any]:
    return {
        "kind": "crucible",
        "method": method,
        "seq": seq,
        "batch": batch,
        "gc": gc,
        "steps": steps,
        "model_dir": str(MODEL_DIR),
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    report["build"] = run_child({"kind": "build", "arch": "llama-3.2-1b", "model_dir": str(MODEL_DIR)})
    print(f"[{time.perf_counter() - t0:5.0f}s] build: {report['build']}", flush=True)

    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            "-q",
            "foundry_assets_tests/crucible",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (OUT / "pytest_gpu.log").write_text(tests.stdout + "\n" + tests.stderr)
    report["pytest_rc"] = tests.returncode
    report["pytest_tail"] = tests.stdout.strip().splitlines()[-12:]
    print(f"[{time.perf_counter() - t0:5.0f}s] pytest -m gpu: rc {tests.returncode}", flush=True)
    print("\n".join(report["pytest_tail"]), flush=True)

    runs = [run_child(spec(*FIRST))]
    print(f"[{time.perf_counter() - t0:5.0f}s] first: {runs[0]}", flush=True)
    for round_ in ROUNDS:
        with ThreadPoolExecutor(len(round_)) as pool:
            done = list(pool.map(lambda cfg: run_child(spec(*cfg)), round_))
        runs += done
        print(
            f"[{time.perf_counter() - t0:5.0f}s] round: {[r.get('peak_gib', r.get('error')) for r in done]}",
            flush=True,
        )
        report["calibration"] = runs
        _save(report)

    # a second crucible job on the warm cache (start-up), then the same LoRA step in a bare Unsloth loop and in HF
    second = run_child(spec("lora", 2048, 4, False, steps=SPEED_STEPS))
    report["second_job"] = second
    print(f"[{time.perf_counter() - t0:5.0f}s] second job: {second}", flush=True)
    _save(report)
    for kind in ("unsloth_loop", "hf_trl"):
        probe = {**spec("lora", 2048, 4, False, steps=SPEED_STEPS), "kind": kind, "warmup": SPEED_WARMUP}
        report[f"speed_{kind}"] = run_child(probe)
        print(f"[{time.perf_counter() - t0:5.0f}s] {kind}: {report[f'speed_{kind}']}", flush=True)
        _save(report)

    import torch

    report["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    report["versions"] = _versions()
    _save(report)

    print(f"\n{report['device']} · {report['versions']}")
    vram_table(runs, "llama-3.2-1b", MODEL_DIR)
    for r in [*runs, second]:
        if "error" in r:
            print(f"ERROR {r['method']} {r['seq']} {r['batch']} {r['gc']}:\n{r['error'][-1800:]}")
    for kind in ("unsloth_loop", "hf_trl"):
        r = report[f"speed_{kind}"]
        print(
            f"speed {kind}: tokens/s {r.get('tokens_per_s')} peak {r.get('peak_gib')} {r.get('error', '')[-1500:]}"
        )
    print(
        f"second job start-up (process start → first step): {second.get('first_step_s')} s; "
        f"tokens/s {second.get('tokens_per_s')}; pytest rc {tests.returncode}"
    )
    return 0


def _save(report: dict[str, Any]) -> None:
    (OUT / "suite.json").write_text(json.dumps(report, indent=1))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    names = ["torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "triton"]
    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "-"
    return versions


if __name__ == "__main__":
    sys.exit(main())
