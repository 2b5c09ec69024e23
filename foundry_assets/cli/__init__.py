"""The `foundry` console script. Exit codes: 0 success, 1 the job (or check) failed, 2 invalid input, 130 stopped."""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from foundry_assets.actor import ACTOR_TAG, actor_from_env, current_actor, use_actor
from foundry_assets.cli.audit import add_audit_parsers
from foundry_assets.cli.curate import add_curate_parser
from foundry_assets.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK
from foundry_assets.cli.exits import fail as _fail
from foundry_assets.cli.sign import add_sign_parsers
from foundry_assets.errors import DataError, ManifestError

if TYPE_CHECKING:
    from foundry_assets.demo.stories import StoryDrops

VERBOSE_HELP = "show every library's own output (progress bars, notices) and Dagster's debug events"
GPU_POOL = "gpu"
"""The Dagster concurrency pool of `trained_adapter`: its limit is how many runs train at once on the node."""


def cmd_validate(args: argparse.Namespace) -> int:
    from foundry_assets.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    print(
        f"OK: job {manifest.job_id} · method {manifest.method_config.type} · base {manifest.base_model} · "
        f"publish {manifest.publish_target.registry} @ {manifest.publish_target.tag}"
    )
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from foundry_assets.manifest import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2))
    return EXIT_OK


def _run(manifest_paths: Sequence[Path], *, verbose: bool = False) -> int:
    """Submit each manifest's job to the instance's queue in turn and follow it to its end (stage lines, the stages'
    log lines, the published location). SIGTERM or Ctrl-C terminates the run being followed."""
    import dagster as dg

    from foundry_assets.daemon import instance_daemon
    from foundry_assets.runner import ensure_dagster_home
    from foundry_assets.submit import follow_run, launch_manifest, published_before, terminate_on_signals

    _console(verbose)
    home = ensure_dagster_home()
    current: list[str] = []
    actor = current_actor()  # the run's records name the person who launched it

    def say(line: str) -> None:
        print(line, flush=True)

    def note(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with dg.DagsterInstance.get() as instance, instance_daemon(instance, lambda line: note(f"note: {line}")):
        terminate_on_signals(instance, lambda: current[-1] if current else None)
        for path in manifest_paths:
            if len(manifest_paths) > 1:
                say(f"\n== {path}")
            if (done := published_before(path)) is not None:
                say(done)
                continue
            manifest, run_id = launch_manifest(path, instance=instance, tags={ACTOR_TAG: actor.to_tag()})
            current.append(run_id)
            say(f"run {run_id} queued on the instance in {home} (job {manifest.job_id}); the UI shows it too")
            outcome = follow_run(instance, run_id, manifest.job_id, say, log=note, verbose=verbose)
            if not outcome.success:
                return _fail(
                    f"job {outcome.job_id} failed (run {outcome.run_id}): {outcome.reason}", EXIT_FAILED
                )
            for check in outcome.failed_checks:  # published, but a check that does not stop the run disagrees
                note(f"foundry: warning: {check}")
            if outcome.published is None:  # release.require_approval: the publish waits for QA's signatures
                say(
                    f"awaiting release approval: nothing published (release_pending in the audit trail); a trusted "
                    f"signer runs `foundry sign {outcome.job_id} --meaning approve-release --reason …` and the "
                    "release sensor publishes"
                )
                say(f"lot number: {outcome.lot_number}")
                continue
            published = outcome.published
            say(f"published:  {published.get('uri')}")
            say(
                f"tag:        {published.get('tag')} ({published.get('status')}, {published.get('artifact')})"
            )
            say(f"lot number: {outcome.lot_number}")
    return EXIT_OK


def cmd_gpus(args: argparse.Namespace) -> int:
    """The node's GPUs and the runs holding them, and the instance's `gpu` pool; `--set-pool` sizes the pool to them."""
    import dagster as dg

    from foundry_assets.gpus import gpu_holders, node_gpus
    from foundry_assets.runner import ensure_dagster_home
    from foundry_assets.workspace import default_root

    gpus = node_gpus()
    home = ensure_dagster_home()
    lock_dir = default_root() / "locks"
    print(f"{len(gpus)} GPU(s) on this node" + (f" (claims in {lock_dir})" if gpus else ""))
    for gpu, holder in gpu_holders(lock_dir, gpus).items():
        print(f"  GPU {gpu}: {holder or 'free'}")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        if args.set_pool:
            if not gpus:
                return _fail("no GPU on this node: the gpu pool keeps its size", EXIT_FAILED)
            storage.set_concurrency_slots(GPU_POOL, len(gpus))
        info = storage.get_concurrency_info(GPU_POOL)
        print(
            f"Dagster pool {GPU_POOL!r} on {home}: limit {info.limit}, {len(info.claimed_slots)} slot(s) claimed"
        )
        for slot in info.claimed_slots:
            run = instance.get_run_by_id(slot.run_id)
            print(f"  run {slot.run_id} ({run.status.value if run else 'unknown'}), step {slot.step_key}")
    return EXIT_OK


def cmd_drops(args: argparse.Namespace) -> int:
    """What the drop sensor did with each drop it saw: requested as a job (run key), or invalid and why."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType

    from foundry_assets.intake.ledger import DropLedger
    from foundry_assets.runner import ensure_dagster_home

    home = ensure_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = [
            state
            for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            if state.instigator_name == "drop_sensor"
        ]
    cursor = next((getattr(s.instigator_data, "cursor", None) for s in states if s.instigator_data), None)
    ledger = DropLedger.loads(cursor)
    if not ledger.drops:
        print(
            f"the drop sensor has recorded no drops on {home} (is it running? `dagster sensor start drop_sensor`)"
        )
        return EXIT_OK
    for name, entry in sorted(ledger.drops.items()):
        if entry.get("status") == "invalid":
            print(f"{name}: invalid: {entry.get('reason')}")
        else:
            print(f"{name}: requested as job {entry.get('job_id')} (run key {entry.get('run_key')})")
    return EXIT_INVALID if args.invalid_exit and ledger.rejected() else EXIT_OK


def _card_gb(value: str) -> float:
    """--vram-gb: a finite, positive size of memory in GB (argparse turns a ValueError into exit 2 and usage)."""
    number = float(value)
    if not 0.0 < number < 10_000.0:  # nan fails both comparisons
        raise argparse.ArgumentTypeError(f"{value} is not a card's free memory in GB (e.g. 24 or 80)")
    return number


def cmd_preflight(args: argparse.Namespace) -> int:
    """Would the manifest's job fit on a card with --vram-gb GB free (or this node's GPU)? Loads no model."""
    from foundry_assets.crucible.hardware import preflight
    from foundry_assets.errors import HardwareIncompatibleError
    from foundry_assets.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    try:
        answer = preflight(manifest, vram_gb=args.vram_gb)
    except HardwareIncompatibleError as e:  # the model cannot be sized: no config.json and no shipped facts
        return _fail(str(e), EXIT_INVALID)
    print(answer.summary)
    if not answer.fits:
        return _fail(answer.reason, EXIT_FAILED)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _run([Path(args.manifest)], verbose=args.verbose)


def _console(verbose: bool) -> None:
    """Quiet third-party output for this run, or (`--verbose`) every library's own output and Dagster's debug."""
    from foundry_assets.console import VERBOSE_ENV, quiet_third_party

    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    quiet_third_party()


def cmd_demo(args: argparse.Namespace) -> int:
    from foundry_assets.runner import ensure_dagster_home
    from foundry_assets.workspace import default_root

    if (args.pretrained or args.base) and args.story != "c":
        return _fail("--pretrained and --base go with --story c", EXIT_INVALID)
    _console(args.verbose)
    ensure_dagster_home()
    root = Path(args.root) if args.root else default_root() / "demo"
    if args.story == "c":
        from datetime import UTC, datetime

        from foundry_assets.demo.stories import write_story_c

        prefix = f"story-c-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        if args.pretrained or args.base:
            story = _pretrained_story(root, args.base, prefix)
        else:
            story = write_story_c(root, prefix=prefix)
        print("Story C: a logic job and a safety job, merged (DARE-TIES) into one published model")
        return _run([story.logic, story.safety, story.merge], verbose=args.verbose)
    from foundry_assets.demo.drop import write_demo_drop

    drop = write_demo_drop(root)
    print(f"demo drop: {drop.manifest_path} ({drop.planted_duplicates} planted near-duplicates)")
    return _run([drop.manifest_path], verbose=args.verbose)


def _pretrained_story(root: Path, base: str | None, prefix: str) -> "StoryDrops":
    """Story C on the pretrained base: `base`, else STORY_BASE pretrained under `root` (once) on this node's GPU, or
    its CPU (well over an hour on two cores)."""
    from foundry_assets.demo.pretrain import STORY_BASE, pretrain_base
    from foundry_assets.demo.stories import write_story_c_pretrained
    from foundry_assets.devices import resolve_device

    device = resolve_device("auto")
    if base is None:
        print(f"pretraining the story base ({STORY_BASE.steps} steps) on the {device}", flush=True)

        def progress(step: int, loss: float) -> None:
            print(f"  step {step}: loss {loss:.3f}", flush=True)

        base = str(
            pretrain_base(root / "models" / "story-base", STORY_BASE, device=device, progress=progress)
        )
    return write_story_c_pretrained(root, base, prefix=prefix, device=device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="foundry", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_manifest_commands(sub)
    add_curate_parser(sub)
    _add_node_commands(sub)
    _add_run_commands(sub)
    add_audit_parsers(sub)
    add_sign_parsers(sub)
    return parser


def _add_manifest_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """validate, preflight, schema: a manifest checked without running anything."""
    p = sub.add_parser("validate", help="validate a training manifest")
    p.add_argument("manifest")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser(
        "preflight",
        help="would this job fit on an N GB card? (VRAM estimate from config.json or shipped facts; exit 0 fits, 1 not)",
    )
    p.add_argument("manifest")
    p.add_argument(
        "--vram-gb",
        type=_card_gb,
        help="free memory of the card to plan for, in GB; default: this node's free GPU memory",
    )
    p.set_defaults(func=cmd_preflight)
    p = sub.add_parser("schema", help="print the manifest's JSON Schema")
    p.set_defaults(func=cmd_schema)


def _add_node_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """gpus, drops: what this node and its drop sensor hold."""
    p = sub.add_parser("gpus", help="this node's GPUs, the runs holding them, and the Dagster gpu pool")
    p.add_argument(
        "--set-pool", action="store_true", help="set the gpu pool's limit to this node's GPU count"
    )
    p.set_defaults(func=cmd_gpus)
    p = sub.add_parser(
        "drops", help="the drop sensor's record: each drop requested as a job, or invalid and why"
    )
    p.add_argument("--invalid-exit", action="store_true", help="exit 2 when any drop is invalid")
    p.set_defaults(func=cmd_drops)


def _add_run_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """run, demo: jobs submitted to the instance and followed."""
    p = sub.add_parser(
        "run", help="add the job's partition and materialize its six assets on DAGSTER_HOME's instance"
    )
    p.add_argument("manifest")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("demo", help="build the tiny offline model and a demo drop, then run it")
    p.add_argument(
        "--root", help="folder for the demo model, drops and registry (default: FOUNDRY_HOME/demo)"
    )
    p.add_argument(
        "--story",
        choices=["c"],
        help="c: train a logic job and a safety job, merge them in a third job and publish the merged model "
        "(default: the single-job demo)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="story c on a base pretrained here first (about 2 min on a GPU, over an hour on a CPU), where the merge "
        "keeps both skills and the merge job gates on both (default: the tiny random-init base, gated on loss)",
    )
    p.add_argument(
        "--base",
        metavar="DIR",
        help="story c on this pretrained base (a folder written by --pretrained), skipping the pretraining",
    )
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    p.set_defaults(func=cmd_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        actor = actor_from_env()  # who this command acts for: FOUNDRY_ACTOR, else the OS user
    except ValueError as e:
        return _fail(str(e), EXIT_INVALID)
    try:
        with use_actor(actor):
            return int(args.func(args))
    except (ManifestError, DataError) as e:
        return _fail(str(e), EXIT_INVALID)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: the run being followed was terminated first
        return _fail(f"{e or 'interrupted'}; the run was terminated", EXIT_INTERRUPTED)
