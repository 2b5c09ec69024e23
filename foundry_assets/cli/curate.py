"""`foundry curate IN --out OUT`: the curator outside Dagster, for one-off use. Prints the counts.

Exit codes follow the `foundry` CLI: 0 done; 2 invalid input (a DataError raised here, mapped by `foundry_assets.cli`);
1 the curation failed for another reason (the embedding model could not load, the output could not be written).
"""

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

from foundry_assets.cli.exits import EXIT_FAILED, EXIT_OK
from foundry_assets.curator.formats import DataFormat
from foundry_assets.curator.readers import FileFormat
from foundry_assets.curator.semdedup import KeepPolicy
from foundry_assets.errors import DataError


def _threshold(value: str) -> float:
    number = float(value)
    if not -1.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a cosine threshold in [-1, 1] (e.g. 0.95)")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0.0 < number < 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction strictly between 0 and 1 (e.g. 0.1)")
    return number


def cmd_curate(args: argparse.Namespace, embedder: Any = None) -> int:
    """Run `curate_drop` and print its counts; `embedder` may be injected (tests), else MiniLM is loaded."""
    from foundry_assets.curator.embed import MiniLMEmbedder
    from foundry_assets.curator.pipeline import curate_drop

    source = Path(args.input)
    if not source.is_file():
        raise DataError(f"{source}: no such file; `foundry curate` takes one JSONL, Parquet or CSV drop")
    out = Path(args.out)
    if source.resolve().is_relative_to(out.resolve()):  # an input named train.jsonl there was overwritten
        raise DataError(
            f"--out {str(out)!r} holds the input {str(source)!r} (symlinks resolved), where the curation writes "
            "train/test/removed/quarantine/contamination.jsonl over any file of that name; write the outputs to "
            "another folder"
        )
    if embedder is None:
        embedder = MiniLMEmbedder(
            model_path=args.embedding_model,
            device=args.device,
            batch_size=args.batch_size,
            progress=args.progress,
        )
    try:
        result = curate_drop(
            source,
            out,
            data_format=args.format,
            embedder=embedder,
            threshold=args.threshold,
            test_fraction=args.test_fraction,
            split_seed=args.split_seed,
            file_format=args.file_format,
            keep=args.keep,
            n_clusters=args.clusters,
            dedup_seed=args.seed,
            cache_dir=args.cache_dir,
            decontaminate_train=args.decontaminate_train,
        )
    except DataError:
        raise
    except (OSError, RuntimeError) as e:
        print(f"foundry: curation of {source} failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"read {result.rows_read} · quarantined {result.quarantined} · near-duplicates removed {result.removed} · "
        f"kept {result.kept}"
    )
    print(
        f"train {result.train_rows} · test {result.test_rows} · train decontaminated {result.train_decontaminated} · "
        f"contaminated test items {len(result.overlap.contaminated) if result.overlap else 0}"
    )
    print(
        f"embedded {result.embedded_new} new, {result.embedded_cached} from the cache · "
        f"{result.n_clusters} cluster(s), keep {result.keep_policy}, threshold {result.threshold}"
    )
    print(f"outputs in {result.train_path.parent}")
    return EXIT_OK


def add_curate_parser(subparsers: Any) -> None:
    """Register `curate` on an argparse subparsers object (the caller maps DataError to exit code 2)."""
    p = subparsers.add_parser(
        "curate",
        help="deduplicate (SemDeDup), split and decontaminate one data drop outside Dagster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="IN", help="the drop: .jsonl, .parquet or .csv")
    p.add_argument(
        "--out", required=True, help="output folder (train/test/removed/quarantine/contamination.jsonl)"
    )
    p.add_argument(
        "--threshold", type=_threshold, default=0.95, help="cosine above which a record is a duplicate"
    )
    p.add_argument(
        "--format", choices=get_args(DataFormat), default="sft", help="what the strategy trains on"
    )
    p.add_argument(
        "--file-format", choices=get_args(FileFormat), help="override the type given by the suffix"
    )
    p.add_argument(
        "--keep", choices=get_args(KeepPolicy), default="earliest", help="which near-copy survives"
    )
    p.add_argument("--clusters", type=int, help="k-means clusters (default: one per 1,000 records)")
    p.add_argument("--seed", type=int, default=0, help="seed of k-means and of the random keep policy")
    p.add_argument("--test-fraction", type=_fraction, default=0.1, help="share of kept records held out")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    p.add_argument("--cache-dir", help="embedding cache folder (re-runs do not re-embed known records)")
    p.add_argument(
        "--decontaminate-train", action="store_true", help="drop training records sharing a 13-gram"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, help="embedding batch size (default by device)")
    p.add_argument(
        "--embedding-model", help="embedding model folder (default: the packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.set_defaults(func=cmd_curate)
