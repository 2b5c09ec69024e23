"""What loading the code location costs: `python benchmarks/bench_import.py [--runs 5]`.

Each arm imports one module in a fresh interpreter (as a code-location server or a run worker does) and reports the
median wall time and the peak RSS over `--runs` runs. Peers in the same run: `dagster` alone (the floor any code
location pays), `torch`, and `unsloth` (which the definitions imported first until 2026-11-30). Prints a table.
"""

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import resource, sys, time\n"
    "t = time.perf_counter()\n"
    "__import__(sys.argv[1])\n"
    "s = time.perf_counter() - t\n"
    "heavy = [m for m in ('torch', 'transformers', 'unsloth', 'trl', 'peft', 'sentence_transformers', 'mergekit') "
    "if m in sys.modules]\n"
    "print(s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, ','.join(heavy) or '-')\n"
)
ARMS = [
    ("foundry_assets.definitions", "the code location"),
    ("dagster", "peer: dagster alone"),
    ("torch", "peer: torch"),
    ("unsloth", "peer: unsloth (imported first by the definitions until 2026-11-30)"),
]


def measure(module: str, runs: int) -> dict[str, object]:
    times, rss, heavy = [], [], "-"
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", PROBE, module],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        seconds, mb, heavy = done.stdout.strip().splitlines()[-1].split()  # the probe prints last
        times.append(float(seconds))
        rss.append(float(mb))
    return {"module": module, "median_s": statistics.median(times), "max_rss_mb": max(rss), "heavy": heavy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = [{**measure(module, args.runs), "what": what} for module, what in ARMS]
    print(
        f"{platform.node()} · {platform.processor() or platform.machine()} · Python {platform.python_version()}"
    )
    print("| import | what | median s | peak RSS MB | heavy modules loaded |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['module']} | {r['what']} | {r['median_s']:.2f} | {r['max_rss_mb']:.0f} | {r['heavy']} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
