"""Loading the code location: the Definitions load in a fresh interpreter without the training or model stack."""

import json
import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "unsloth",
    "unsloth_zoo",
    "trl",
    "peft",
    "sentence_transformers",
    "mergekit",
)


def test_the_code_location_imports_no_model_stack() -> None:
    """Every code-location load and run worker would pay for these (≈ 15 s and 1.45 GB with torch and Unsloth);
    the steps import them when they run. Speed itself is measured by benchmarks/bench_import.py."""
    probe = (
        "import json, sys\n"
        "import foundry_assets.definitions as d\n"
        "assert d.defs.resolve_job_def('foundry_job') is not None\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
