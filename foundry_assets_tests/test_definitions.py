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


def test_every_stage_has_owners_tags_and_a_link_to_its_code() -> None:
    from foundry_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.owners == ["team:ml-platform"], key
        assert spec.tags.get("compliance") == "gxp", key
        references = spec.metadata["dagster/code_references"].code_references
        assert references and references[0].file_path.endswith(".py"), key  # "Open source code" in the UI


def test_dg_loads_the_one_definitions() -> None:
    """`dg check defs` (dagster-dg-cli, the dev extra) loads the project as `dg dev` would."""
    import subprocess
    import sys
    from pathlib import Path

    dg_cli = Path(sys.executable).with_name("dg")
    done = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr
