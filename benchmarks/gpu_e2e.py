"""The whole foundry job at production shape on a GPU node, as an operator runs it: `python benchmarks/gpu_e2e.py`.

Builds a random-init base of a real architecture (default Llama-3.1-8B shape, bf16 safetensors, built on the GPU: no
hub), writes a drop per job and runs each through `foundry run MANIFEST` in a fresh process (a real Dagster instance
under DAGSTER_HOME, the six assets, a local registry):

  qlora  4-bit SFT                dora  SFT with DoRA             orpo  preference triplets
  merge  a merge-only job: DARE-TIES of the qlora and dora jobs' published adapters (fetched from the registry)
  served a DoRA job left at `artifact: auto`: it publishes its merged 16-bit model (servable by vLLM/TGI)
  challenger  a qlora job whose exam also scores the qlora job's published adapter (`exam.champion`) and must beat both
  q4     qlora on a pre-quantized bnb-4bit copy of the base (as `unsloth/llama-3-8b-bnb-4bit` ships), DARE-TIES of its
         adapter with the qlora job's published adapter into the dequantized 16-bit base

and prints one table: per-asset wall time and device (from the Dagster event log), GPU memory (device-wide peak
sampled with nvidia-smi, and the training's peak allocated against the pre-flight estimate), host RAM peak of the
largest process, disk used on the node during the job and left after it, artifact size, pass/fail. Results go to
`--out` as JSON. `--arch tiny` runs the same on the 2-layer demo model on the CPU, to check the script itself.

Environment on the lent GPU: see benchmarks/RESULTS.md § "GPU end to end" for the wheels and variables.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GIB = 1024**3
ASSETS = [
    "raw_data",
    "curated_dataset",
    "trained_adapter",
    "merged_model",
    "exam_report",
    "published_artifact",
]
SFT_JOBS = ("qlora", "dora")


def records_sft(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` distinct instruction records of mixed length (arithmetic, lists, reversals)."""
    rng = random.Random(seed)
    words = [
        f"{a}{b}"
        for a in ("ka", "lo", "mi", "nu", "ro", "sa", "te", "vo")
        for b in ("n", "r", "s", "th", "x")
    ]
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            a, b = rng.randint(10, 999), rng.randint(10, 999)
            out.append(
                {"instruction": f"Item {i}: what is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
            )
        elif kind == 1:
            picked = rng.sample(words, rng.randint(3, 12))
            out.append(
                {
                    "instruction": f"Item {i}: sort these words: {' '.join(picked)}",
                    "output": " ".join(sorted(picked)),
                }
            )
        else:
            w = "".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(5, 14)))
            out.append({"instruction": f"Item {i}: spell {w} backwards.", "output": w[::-1]})
    return out


def records_preference(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        out.append(
            {
                "prompt": f"Case {i}: add {a} and {b}.",
                "chosen": f"{a} plus {b} is {a + b}.",
                "rejected": f"{a} plus {b} is {a + b + rng.randint(1, 9)}.",
            }
        )
    return out


def registry(args: argparse.Namespace) -> Path:
    return Path(args.registry or Path(args.root) / "registry").resolve()


def write_job(root: Path, job: str, model_dir: Path, args: argparse.Namespace) -> Path:
    import yaml

    drop = root / "drops" / job
    drop.mkdir(parents=True, exist_ok=True)
    method = {"orpo": "orpo", "merge": "dora", "q4": "qlora", "served": "dora", "challenger": "qlora"}.get(
        job, job
    )
    records = (
        records_preference(args.records, 7)
        if job == "orpo"
        else records_sft(args.records, sum(map(ord, job)))
    )
    (drop / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    manifest: dict[str, Any] = {
        "job_id": f"e2e-{job}",
        "base_model": f"foundry-e2e/{args.arch}" + ("-bnb-4bit" if job == "q4" else ""),
        "model_path": str(quantized_dir(model_dir) if job == "q4" else model_dir),
        "method_config": {
            "type": method,
            "rank": 16,
            "max_steps": args.steps,
            "max_seq_length": args.seq,
            "logging_steps": 10,
            "learning_rate": 2e-4 if args.arch != "tiny" else 5e-3,
        },
        "publish_target": {"registry": str(registry(args)), "tag": f"v1.0.0-e2e-{job}"},
        "compute": {"batch_size": args.batch, "grad_accum": 1, "device": args.device},
        "data": {"path": "data.jsonl", "test_fraction": args.test_fraction},
        "exam": {"max_contamination": 1.0},
    }
    if (
        job == "challenger"
    ):  # the exam also scores the qlora job's published adapter (the champion) on its items
        manifest["exam"] = {
            "max_contamination": 1.0,
            "gate": ["heldout_loss"],
            "min_loss_improvement": 0.0,
            "champion": {"job": "e2e-qlora"},
        }
    if job in SFT_JOBS:  # the merge jobs' sources: `auto` would publish a DoRA job's merged model
        manifest["publish_target"]["artifact"] = "adapter"
    if job == "merge":
        manifest["merge"] = {
            "sources": [{"job": f"e2e-{s}", "weight": 1.0, "density": 0.5} for s in SFT_JOBS],
            "include_own_adapter": False,
            "normalize": True,
            "seed": 0,
        }
        manifest["publish_target"]["artifact"] = "merged_model"
    if job == "q4":
        published = registry(args) / "v1.0.0-e2e-qlora"  # the adapter sits at the tag's root
        manifest["merge"] = {
            "sources": [{"adapter": str(published), "weight": 1.0, "density": 0.5}],
            "normalize": True,
            "seed": 0,
        }
        manifest["publish_target"]["artifact"] = "merged_model"
    path = drop / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    return path


class Sampler:
    """Samples each GPU's device-wide memory (nvidia-smi) and disk use every `every` seconds while a job runs."""

    def __init__(self, disk_root: Path, every: float = 0.5) -> None:
        self.disk_root, self.every = disk_root, every
        self.gpu_peak_mib: dict[str, int] = {}  # GPU index -> peak MiB in use while the job ran
        self.disk_start = shutil.disk_usage(disk_root).used
        self.disk_peak = self.disk_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._nvidia = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._nvidia:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                for line in out.splitlines():
                    index, _, used = line.partition(",")
                    if used.strip().isdigit():
                        key = index.strip()
                        self.gpu_peak_mib[key] = max(self.gpu_peak_mib.get(key, 0), int(used))
            self.disk_peak = max(self.disk_peak, shutil.disk_usage(self.disk_root).used)
            self._stop.wait(self.every)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_job(manifest: Path, env: dict[str, str], log: Path) -> tuple[int, float, float]:
    """`foundry run MANIFEST` in a fresh process; (exit code, wall s, max RSS GiB of its largest process)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[1:]).returncode\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-c", wrapper, sys.executable, "-m", "foundry_assets.cli", "run", str(manifest)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    wall = time.perf_counter() - started
    rss = 0.0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("MAXRSS "):
            rss = int(line.split()[1]) * 1024 / GIB
    return done.returncode, wall, rss


def run_facts(job_id: str) -> dict[str, Any]:
    """Per-asset wall time, device and selected metadata from the instance's event log for the job's latest run."""
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": job_id}), limit=1)
    if not runs:
        return {}
    run = runs[0]
    starts: dict[str, float] = {}
    facts: dict[str, Any] = {"run_id": run.run_id, "status": run.status.value, "steps": {}}
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            step = facts["steps"].setdefault(event.step_key, {})
            step["wall_s"] = round(entry.timestamp - starts.get(event.step_key, entry.timestamp), 1)
            step["ok"] = event.event_type == dg.DagsterEventType.STEP_SUCCESS
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.step_materialization_data.materialization.metadata
            step = facts["steps"].setdefault(event.step_key, {})
            for key in (
                "device",
                "dtype",
                "peak_memory_gib",
                "hardware_vram_total_gib",
                "hardware_gradient_checkpointing",
                "gpu_memory_in_use_after_gib",
                "time_to_first_step_s",
                "tokens_per_s",
                "runtime_s",
                "exam_s",
                "passed",
                "champion",
                "heldout_loss_baseline",
                "heldout_loss_champion",
                "heldout_loss_candidate",
                "method",
                "gpu",
            ):
                if key in metadata:
                    step[key] = metadata[key].value
            # a merge job's exam scores its sources too: their numbers and seconds
            step |= {k: v.value for k, v in metadata.items() if "_source_" in k or k.startswith("source_")}
    return facts


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def build_base(args: argparse.Namespace) -> tuple[Path, float]:
    started = time.perf_counter()
    if args.arch == "tiny":
        from foundry_assets.demo.tiny_model import build_tiny_llama

        corpus = [f"{r['instruction']} {r['output']}" for r in records_sft(200, 0)]
        return build_tiny_llama(Path(args.model_dir), corpus=corpus), time.perf_counter() - started
    from foundry_assets.crucible.vram import KNOWN_ARCHITECTURES
    from foundry_assets.demo.tiny_model import build_random_llama

    corpus = [f"{r['instruction']} {r['output']}" for r in records_sft(400, 0)]
    out = build_random_llama(Path(args.model_dir), KNOWN_ARCHITECTURES[args.arch], corpus=corpus)
    return out, time.perf_counter() - started


def quantized_dir(model_dir: Path) -> Path:
    return model_dir.with_name(model_dir.name + "-bnb-4bit")


def build_quantized(model_dir: Path, device: str) -> tuple[Path, float]:
    """A pre-quantized bnb-4bit copy of the base (NF4, double quant), saved the way hub `-bnb-4bit` bases are."""
    started = time.perf_counter()
    out = quantized_dir(model_dir)
    if (out / "config.json").exists():
        return out, 0.0
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    compute = torch.bfloat16 if device == "cuda" else torch.float32
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        quantization_config=config,
        dtype=compute,
        device_map={"": 0} if device == "cuda" else "cpu",
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(tmp))
    tmp.rename(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--arch", default="llama-3.1-8b", help="a shipped architecture, or 'tiny' (CPU check)"
    )
    parser.add_argument("--model-dir", default="/tmp/e2e-base")
    parser.add_argument("--root", default="/tmp/e2e", help="FOUNDRY_HOME, DAGSTER_HOME, drops and registry")
    parser.add_argument("--jobs", default="qlora,dora,orpo,merge,q4")
    parser.add_argument(
        "--registry",
        help="the local registry (default ROOT/registry); on the GPU node /dev/shm stands in for remote storage, "
        "so the node's disk holds only what a job keeps on the node",
    )
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--lanes", type=int, default=1, help="jobs at once (the gpu pool's size); each run claims its own GPU"
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="then run `foundry run` of every job once more: a published lot is a no-op (no run, no new record)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks/_out"))
    parser.add_argument(
        "--load-tags",
        action="store_true",
        help="load each published tag from its root as a Hugging Face user does, and generate (load_tag.py)",
    )
    args = parser.parse_args()
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "FOUNDRY_HOME": str(root / "foundry"),
        "DAGSTER_HOME": str(root / "dagster_home"),
        "HF_HUB_OFFLINE": "1",
        "UNSLOTH_DISABLE_STATISTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p),
    }
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    instance_yaml = (ROOT / "foundry_assets" / "dagster.yaml").read_text(encoding="utf-8")
    # one training per GPU: the gpu pool holds as many slots as lanes (README: scaling to N GPUs)
    instance_yaml = instance_yaml.replace("default_limit: 1", f"default_limit: {args.lanes}")
    (Path(env["DAGSTER_HOME"]) / "dagster.yaml").write_text(instance_yaml, encoding="utf-8")
    os.environ.update({k: env[k] for k in ("FOUNDRY_HOME", "DAGSTER_HOME")})
    import dagster as dg

    dg.DagsterInstance.get().get_runs(
        limit=1
    )  # create the SQLite schema once, before jobs start side by side

    model_dir, build_s = build_base(args)
    base_bytes = dir_bytes(model_dir)
    print(
        f"base {args.arch}: {model_dir} ({base_bytes / GIB:.1f} GiB) built/found in {build_s:.0f} s",
        flush=True,
    )
    jobs = args.jobs.split(",")
    if "q4" in jobs:
        q4_dir, q4_s = build_quantized(model_dir, args.device)
        print(
            f"bnb-4bit base: {q4_dir} ({dir_bytes(q4_dir) / GIB:.1f} GiB) built in {q4_s:.0f} s", flush=True
        )
    rows: list[dict[str, Any]] = []

    def one(job: str) -> dict[str, Any]:
        # no CUDA_VISIBLE_DEVICES here: each run claims a free GPU itself (GpuResource) and records it as `gpu`
        manifest = write_job(root, job, model_dir, args)
        with Sampler(root) as sampler:
            code, wall, rss = run_job(manifest, env, out / f"e2e-{job}.log")
        facts = run_facts(f"e2e-{job}")
        claimed = {str(s["gpu"]) for s in facts.get("steps", {}).values() if "gpu" in s}
        job_dir = root / "foundry" / "jobs" / f"e2e-{job}"
        tag = registry(args) / f"v1.0.0-e2e-{job}"
        return {
            "job": job,
            "gpu": ",".join(sorted(claimed)) or "none",
            "exit": code,
            "wall_s": round(wall, 1),
            "gpu_peak_gib": round(
                max((sampler.gpu_peak_mib.get(g, 0) for g in claimed), default=0) / 1024, 2
            ),
            "gpu_peak_by_index_gib": {g: round(m / 1024, 2) for g, m in sorted(sampler.gpu_peak_mib.items())},
            "host_rss_peak_gib": round(rss, 2),
            "disk_peak_gib": round((sampler.disk_peak - sampler.disk_start) / GIB, 2),
            "job_dir_after_gib": round(dir_bytes(job_dir) / GIB, 3),
            "artifact_gib": round(dir_bytes(tag) / GIB, 3),
            "published": tag.is_dir(),
            "manifest": str(manifest),
            **facts,
        }

    # sources before the jobs that merge them; with --lanes N, N jobs of a phase run at once, one per GPU
    order = ["qlora", "dora", "orpo", "merge", "served", "challenger", "q4"]
    queue = [j for j in order if j in jobs] + [j for j in jobs if j not in order]
    phases: list[list[str]] = []
    for job in queue:
        needs = set(SFT_JOBS) if job in ("merge", "q4") else {"qlora"} if job == "challenger" else set()
        placed = {j for phase in phases for j in phase}
        if (
            phases
            and len(phases[-1]) < args.lanes
            and not (needs & set(phases[-1]))
            and needs <= placed | set(phases[-1])
        ):
            phases[-1].append(job)
        else:
            phases.append([job])
    print(f"phases (lanes {args.lanes}): {phases}", flush=True)
    for phase in phases:
        with ThreadPoolExecutor(len(phase)) as pool:
            done = list(pool.map(one, phase))
        for row in done:
            rows.append(row)
            print(json.dumps(row), flush=True)
            job, code = row["job"], row["exit"]
            partial = {
                "arch": args.arch,
                "base_gib": round(base_bytes / GIB, 2),
                "build_s": round(build_s, 1),
                "jobs": rows,
            }
            (out / "gpu_e2e.json").write_text(json.dumps(partial, indent=2, default=str))
            if code != 0:
                print(Path(out / f"e2e-{job}.log").read_text(errors="replace")[-4000:], flush=True)
    report = {
        "arch": args.arch,
        "lanes": args.lanes,
        "base_gib": round(base_bytes / GIB, 2),
        "build_s": round(build_s, 1),
        "jobs": rows,
        "reruns": [rerun(row, env, out, root) for row in rows if row["published"]] if args.rerun else [],
        "loads": [load_tag(row, model_dir, args) for row in rows if row["published"]]
        if args.load_tags
        else [],
    }
    (out / "gpu_e2e.json").write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    return 0 if all(r["exit"] == 0 and r["published"] for r in rows) else 1


def rerun(row: dict[str, Any], env: dict[str, str], out: Path, root: Path) -> dict[str, Any]:
    """`foundry run` of a published job's manifest again: what it costs and whether it stayed a no-op."""
    job = row["job"]
    trail = root / "foundry" / "audit" / f"e2e-{job}.jsonl"
    before = trail.read_text().splitlines()
    log = out / f"e2e-{job}-rerun.log"
    code, wall, _ = run_job(Path(row["manifest"]), env, log)
    said = log.read_text(errors="replace")
    result = {
        "job": job,
        "exit": code,
        "wall_s": round(wall, 1),
        "no_op": "this lot is already published" in said and " queued on the instance" not in said,
        "new_records": len(trail.read_text().splitlines()) - len(before),
    }
    print(json.dumps({"rerun": result}), flush=True)
    return result


def load_tag(row: dict[str, Any], model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """benchmarks/load_tag.py on the job's published tag, in a fresh process (transformers/peft only)."""
    tag = registry(args) / f"v1.0.0-e2e-{row['job']}"
    command = [sys.executable, str(ROOT / "benchmarks" / "load_tag.py"), str(tag), "--base", str(model_dir)]
    done = subprocess.run(
        [*command, "--device", args.device], capture_output=True, text=True, check=False, timeout=600
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    result = {"job": row["job"], "exit": done.returncode, **(json.loads(lines[-1]) if lines else {})}
    if done.returncode != 0:
        result["error"] = done.stderr[-1500:]
    print(json.dumps({"load": result}), flush=True)
    return result


def print_table(report: dict[str, Any]) -> None:
    short = {
        "raw_data": "raw",
        "curated_dataset": "curate",
        "trained_adapter": "train",
        "merged_model": "merge",
        "exam_report": "exam",
        "published_artifact": "publish",
    }
    print(
        f"\nGPU end to end: base {report['arch']} ({report['base_gib']} GiB), built in {report['build_s']} s; "
        f"{report.get('lanes', 1)} job(s) at once, one per GPU"
    )
    head = ["job", "result", "total s"] + [f"{short[a]} s (dev)" for a in ASSETS]
    head += [
        "first step s",
        "tok/s",
        "GPU peak GiB",
        "train alloc/est GiB",
        "GPU in use after train GiB",
        "host RSS GiB",
        "disk peak GiB",
        "left on node GiB",
        "artifact GiB",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in report["jobs"]:
        steps = r.get("steps", {})
        cells = [
            f"{r['job']} (gpu {r.get('gpu', 0)})",
            "published" if r["published"] and r["exit"] == 0 else f"FAIL ({r['exit']})",
            r["wall_s"],
        ]
        for asset in ASSETS:
            s = steps.get(asset, {})
            cells.append(f"{s.get('wall_s', '—')} ({s.get('device', '—')})" if s else "—")
        train = steps.get("trained_adapter", {})
        est = train.get("hardware_vram_total_gib")
        cells += [
            train.get("time_to_first_step_s", "—"),
            train.get("tokens_per_s", "—"),
            r["gpu_peak_gib"],
            f"{train.get('peak_memory_gib', '—')}/{est or '—'}",
            train.get("gpu_memory_in_use_after_gib", "—"),
            r["host_rss_peak_gib"],
            r["disk_peak_gib"],
            r["job_dir_after_gib"],
            r["artifact_gib"],
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if report.get("reruns"):
        print("\nThe same `foundry run` again, each job published:\n")
        print("| job | exit | wall s | no-op (no run launched) | new audit records |\n|---|---|---|---|---|")
        for r in report["reruns"]:
            print(f"| {r['job']} | {r['exit']} | {r['wall_s']} | {r['no_op']} | {r['new_records']} |")
    if report.get("loads"):
        print("\nEach published tag loaded from its root in a fresh process (benchmarks/load_tag.py):\n")
        head = "| job | loaded as | load s | generate s | new tokens | stopped at EOS | card: library / relation | "
        print(head + "model-index metrics |\n|---|---|---|---|---|---|---|---|")
        for r in report["loads"]:
            card = r.get("card", {})
            print(
                f"| {r['job']} | {r.get('loaded_as', 'FAIL ' + str(r['exit']))} | {r.get('load_s')} | "
                f"{r.get('generate_s')} | {r.get('new_tokens')} | {r.get('stopped_at_eos')} | "
                f"{card.get('library_name')} / {card.get('base_model_relation')} | {len(card.get('model_index', []))} |"
            )


if __name__ == "__main__":
    sys.exit(main())
