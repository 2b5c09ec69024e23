"""Benchmark of the curator: SemDeDup (k-means) against exact all-pairs search, the 1M-embedding run, the overlap check.

    .venv/bin/python benchmarks/bench_curator.py                      # defaults: about 10 minutes on 2 cores
    .venv/bin/python benchmarks/bench_curator.py --sizes 1000,10000 --million 200000 --tokens 2000000   # quick

Prints one markdown table. Per size: a synthetic corpus (templated questions and answers) with planted paraphrase-like
near-duplicates (punctuation, one swapped word, a contraction, an added filler word) is embedded with all-MiniLM-L6-v2,
deduplicated with `semdedup` (default settings, embedding excluded from its time) and, where n ≤ --exact-max, with
`exact_semdedup` (all pairs, same rule, same order); recall and precision are those of the removed set against exact
search, "= exact" says whether the whole result (kept set, each removed record's kept duplicate and similarity) is
identical, and "recall, 1 probe" is plain one-cluster SemDeDup (`probes=1`) for comparison. The `--precomputed` and
`--million` rows deduplicate precomputed 384-dim float32 embeddings (a 2,000-topic Gaussian mixture with 10% planted
near-copies, memory-mapped from disk) in a child process whose peak RSS is reported. The overlap line runs
`ngram_overlap` (13-grams, with the training side too) on --tokens words of synthetic text --overlap-runs times and
reports the median throughput.
"""

import argparse
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WORDS = [
    "river",
    "mountain",
    "engine",
    "theory",
    "garden",
    "market",
    "planet",
    "signal",
    "memory",
    "window",
    "bridge",
    "castle",
    "forest",
    "ocean",
    "winter",
    "summer",
    "violin",
    "doctor",
    "teacher",
    "farmer",
    "pilot",
    "sailor",
    "painter",
    "circuit",
    "battery",
    "protein",
    "enzyme",
    "glacier",
    "desert",
    "canyon",
    "harbor",
    "museum",
    "library",
    "village",
    "kingdom",
    "empire",
    "festival",
    "recipe",
    "kitchen",
    "bakery",
    "orchard",
    "vineyard",
    "meadow",
    "lantern",
    "compass",
    "anchor",
    "rocket",
    "satellite",
    "telescope",
    "microscope",
    "algorithm",
    "database",
    "network",
    "protocol",
    "compiler",
    "kernel",
]
VERBS = [
    "explain",
    "describe",
    "compare",
    "summarise",
    "analyse",
    "illustrate",
    "evaluate",
    "define",
    "outline",
    "discuss",
]
FILLERS = ["briefly", "please", "simply", "carefully", "clearly"]


def synthetic_corpus(n: int, dup_fraction: float, seed: int) -> tuple[list[str], set[int]]:
    """n texts; about dup_fraction of them are paraphrase-like edits of an earlier text (their indices returned)."""
    rng = random.Random(seed)
    texts: list[str] = []
    planted: set[int] = set()
    while len(texts) < n:
        if texts and rng.random() < dup_fraction:
            src = texts[rng.randrange(len(texts))]
            edit = rng.randrange(4)
            words = src.split()
            if edit == 0:
                text = src.replace(".", "!", 1) if "." in src else src + "!"
            elif edit == 1:
                j = rng.randrange(len(words))
                words[j] = rng.choice(WORDS)
                text = " ".join(words)
            elif edit == 2:
                text = src.replace("What is", "What's").replace("It is", "It's")
            else:
                words.insert(rng.randrange(1, len(words)), rng.choice(FILLERS))
                text = " ".join(words)
            planted.add(len(texts))
        else:
            a, b, c, d = (rng.choice(WORDS) for _ in range(4))
            text = (
                f"{rng.choice(VERBS).capitalize()} how the {a} relates to the {b} in {c} {rng.randrange(10**6)}. "
                f"What is the role of the {d}? It is a {rng.choice(WORDS)} of {rng.choice(WORDS)}."
            )
        texts.append(text)
    return texts, planted


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_size(n: int, exact_max: int, embedder: object) -> dict[str, str]:
    from foundry_assets.curator.semdedup import exact_semdedup, semdedup

    texts, _ = synthetic_corpus(n, 0.1, seed=n)
    t0 = time.perf_counter()
    e = embedder.encode(texts)  # type: ignore[attr-defined]
    embed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = semdedup(e, 0.95)
    dedup_s = time.perf_counter() - t0
    row = {
        "records": f"{n:,}",
        "embed s": f"{embed_s:.1f}",
        "dedup s": f"{dedup_s:.2f}",
        "dedup/embed": f"{dedup_s / embed_s:.1%}",
        "clusters": str(result.n_clusters),
        "mean probes": f"{result.mean_probes:.2f}",
        "removed": f"{len(result.removed):,}",
        "peak RSS MB": f"{peak_rss_mb():.0f}",
    }
    if n <= exact_max:
        t0 = time.perf_counter()
        exact = exact_semdedup(e, 0.95)
        row["exact s"] = f"{time.perf_counter() - t0:.1f}"
        recall, precision, same = compare(result, exact)
        plain_recall, _, _ = compare(semdedup(e, 0.95, probes=1), exact)
        row |= {"recall": recall, "precision": precision, "= exact": same, "recall, 1 probe": plain_recall}
    return row


def compare(result: Any, exact: Any) -> tuple[str, str, str]:
    """Recall and precision of the removed set against exact search, and whether the whole result (kept set, and
    every removed record's kept duplicate and similarity) is identical."""
    ours = {r.index for r in result.removed}
    truth = {r.index for r in exact.removed}
    recall = f"{len(ours & truth) / len(truth):.4f}" if truth else "n/a"
    precision = f"{len(ours & truth) / len(ours):.4f}" if ours else "n/a"
    same = "yes" if (result.kept, result.removed) == (exact.kept, exact.removed) else "no"
    return recall, precision, same


def write_million(path: Path, n: int, dim: int = 384, seed: int = 0) -> None:
    """n float32 unit rows: 2,000 topics, 10% of rows near-copies (cosine ≈ 0.97-0.99) of earlier rows."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2000, dim)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        block = centers[rng.integers(0, 2000, m)] + 1.2 * rng.standard_normal((m, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        dup = rng.random(m) < 0.1
        src = rng.integers(0, m, int(dup.sum()))
        block[dup] = block[src] + 0.012 * rng.standard_normal((int(dup.sum()), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s : s + m] = block
    out.flush()
    del out


def child_dedup(path: str, exact: bool) -> None:
    """Runs in a fresh process: memory-map the embeddings, deduplicate, print seconds, removed, clusters, peak RSS
    (and, if asked, exact-search seconds, recall, precision)."""
    from foundry_assets.curator.semdedup import exact_semdedup, semdedup

    e = np.load(path, mmap_mode="r")
    t0 = time.perf_counter()
    result = semdedup(e, 0.95)
    out = [
        time.perf_counter() - t0,
        len(result.removed),
        result.n_clusters,
        peak_rss_mb(),
        result.mean_probes,
    ]
    if exact:
        t0 = time.perf_counter()
        truth = exact_semdedup(e, 0.95)
        out += [
            time.perf_counter() - t0,
            *compare(result, truth),
            compare(semdedup(e, 0.95, probes=1), truth)[0],
        ]
    print(*out)


def bench_precomputed(n: int, exact_max: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "emb.npy"
        write_million(path, n)
        command = [sys.executable, __file__, "--child-dedup", str(path)] + (
            ["--child-exact"] if n <= exact_max else []
        )
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    seconds, removed, clusters, rss = float(out[0]), int(out[1]), int(out[2]), float(out[3])
    extra = (
        {
            "exact s": f"{float(out[5]):.1f}",
            "recall": out[6],
            "precision": out[7],
            "= exact": out[8],
            "recall, 1 probe": out[9],
        }
        if len(out) > 5
        else {}
    )
    return extra | {
        "records": f"{n:,} (precomputed)",
        "embed s": "—",
        "dedup s": f"{seconds:.1f}",
        "dedup/embed": "—",
        "clusters": str(clusters),
        "mean probes": f"{float(out[4]):.2f}",
        "removed": f"{removed:,}",
        "peak RSS MB": f"{rss:.0f}",
    }


def bench_overlap(tokens: int, repeats: int) -> str:
    from foundry_assets.curator.decontam import ngram_overlap

    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(50_000)])
    per_doc = 500
    docs = [" ".join(r) + ", end." for r in vocab[rng.integers(0, 50_000, size=(tokens // per_doc, per_doc))]]
    cut = int(len(docs) * 0.9)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = ngram_overlap(docs[:cut], [*docs[cut:], docs[3]], find_train=True)
        runs.append(report.tokens / (time.perf_counter() - t0) / 1e6)
    return (
        f"overlap check (13-grams, both directions, {report.tokens:,} tokens), {repeats} runs: median "
        f"{float(np.median(runs)):.1f}M tokens/s (runs: {', '.join(f'{r:.1f}' for r in runs)}; load average "
        f"{os.getloadavg()[0]:.1f}); planted contamination found: {report.contaminated[-1:]} test, "
        f"{report.contaminated_train} train"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="corpus sizes to embed and deduplicate")
    parser.add_argument(
        "--exact-max", type=int, default=100_000, help="largest size compared with exact search"
    )
    parser.add_argument("--million", type=int, default=1_000_000, help="precomputed embeddings (0 to skip)")
    parser.add_argument(
        "--tokens", type=int, default=10_000_000, help="words for the overlap check (0 to skip)"
    )
    parser.add_argument(
        "--overlap-runs", type=int, default=5, help="repeats of the overlap check (median shown)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precomputed",
        default="",
        help="extra precomputed-embedding sizes (compared with exact search up to --exact-max)",
    )
    parser.add_argument("--child-dedup", help=argparse.SUPPRESS)
    parser.add_argument("--child-exact", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_dedup:
        child_dedup(args.child_dedup, args.child_exact)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from foundry_assets.curator.embed import MiniLMEmbedder

    embedder = MiniLMEmbedder(device=args.device)
    embedder.encode(["warm up"])
    rows = [bench_size(int(s), args.exact_max, embedder) for s in args.sizes.split(",") if s]
    rows += [bench_precomputed(int(s), args.exact_max) for s in args.precomputed.split(",") if s]
    if args.million:
        rows.append(bench_precomputed(args.million, 0))
    columns = [
        "records",
        "embed s",
        "dedup s",
        "dedup/embed",
        "clusters",
        "mean probes",
        "removed",
        "exact s",
        "recall",
        "precision",
        "= exact",
        "recall, 1 probe",
        "peak RSS MB",
    ]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}, "
        f"embedder on {embedder.device} (batch {embedder.batch_size}); load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row.get(c, "—") for c in columns) + " |")
    if args.tokens:
        print()
        print(bench_overlap(args.tokens, args.overlap_runs))
    print(f"load average at end {os.getloadavg()[0]:.1f} (other processes share this machine)")


if __name__ == "__main__":
    main()
