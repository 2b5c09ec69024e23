"""Views of a curation for people: the nearest-neighbour similarity histogram and the removed/kept pairs to audit."""

import math
from typing import Any

import numpy as np

from foundry_assets.curator.greedy import RemovedItem

_BAR = 40
_EXAMPLE_CHARS = 200


def similarity_histogram_md(
    similarity: np.ndarray, threshold: float, *, low: float = 0.5, width: float = 0.05
) -> str:
    """A markdown table with bars: how many records have their nearest neighbour at each cosine similarity.

    Records at or above the threshold's bin are the ones SemDeDup looks at; NaN (a record alone in its cluster) is
    counted on its own row."""
    values = np.asarray(similarity, dtype=np.float64)
    alone = int(np.isnan(values).sum())
    values = values[~np.isnan(values)]
    edges = [low + i * width for i in range(round((1.0 - low) / width) + 1)]
    counts = np.histogram(np.clip(values, low, 1.0), bins=edges)[0].tolist()
    below = int((values < low).sum())
    counts[0] -= below
    rows = [(f"< {low:.2f}", below)] + [
        (f"{a:.2f}–{b:.2f}", c) for a, b, c in zip(edges, edges[1:], counts, strict=False)
    ]
    if alone:
        rows.append(("alone in cluster", alone))
    top = max((c for _, c in rows), default=0) or 1
    lines = [
        f"Nearest-neighbour cosine similarity of {len(values) + alone} records (threshold {threshold}: "
        "records whose nearest kept neighbour is above it are removed).",
        "",
        "| cosine | records | |",
        "|---|---:|---|",
    ]
    for label, count in rows:
        marker = (
            " ← threshold" if label[0].isdigit() and float(label[:4]) <= threshold < float(label[-4:]) else ""
        )
        bar = "█" * math.ceil(_BAR * count / top) if count else ""
        lines.append(f"| {label} | {count} | {bar}{marker} |")
    return "\n".join(lines)


def _clip(text: str) -> str:
    return text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 1] + "…"


def removed_examples(
    removed: list[RemovedItem], texts: list[str], lines: list[int], count: int = 5
) -> list[dict[str, Any]]:
    """A few removed/kept pairs spread over the similarity range, lowest first (the ones nearest the threshold are the
    ones an auditor should look at)."""
    if not removed:
        return []
    ordered = sorted(removed, key=lambda r: (r.similarity, r.index))
    picks = sorted(
        {round(i * (len(ordered) - 1) / max(count - 1, 1)) for i in range(min(count, len(ordered)))}
    )
    return [
        {
            "removed": _clip(texts[ordered[p].index]),
            "kept": _clip(texts[ordered[p].kept_index]),
            "similarity": round(ordered[p].similarity, 4),
            "removed_line": lines[ordered[p].index],
            "kept_line": lines[ordered[p].kept_index],
        }
        for p in picks
    ]
