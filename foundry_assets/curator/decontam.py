"""N-gram contamination check between a training set and a test set (GPT-3 / lm-eval-harness style).

Texts are normalised (lowercased, punctuation removed, split on whitespace: `normalize_words`); a test item is
contaminated when any of its n-grams (default 13 words, as in the GPT-3 paper) also occurs in the training texts.
Texts shorter than n words have no n-grams and are never flagged.

Nothing here loops in Python per word or per n-gram. The whole corpus is normalised with C-level string operations
(`bytes.translate` for ASCII texts, one regex pass otherwise), joined into one byte buffer, and every word is hashed
from the bytes with a 64-bit polynomial hash computed by prefix sums (numpy wraps uint64 arithmetic modulo 2⁶⁴). Each
window of n word hashes becomes one 64-bit n-gram hash (random odd coefficients, then the splitmix64 finaliser); windows
that would cross two texts are dropped. The training side is then one sorted uint64 array (8 bytes per n-gram) and the
test side is looked up with `searchsorted`. A false match needs a 64-bit collision (probability ≈ m²/2⁶⁴ for m distinct
n-grams); every reported example n-gram is read back from the test text.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_NON_WORD = re.compile(r"[^\w\s]|_", flags=re.UNICODE)
_SPACES = re.compile(r"\s+", flags=re.UNICODE)
_COEF_SEED = 13_2026
_MAX_EXAMPLES = 5
_CHUNK_BYTES = 1 << 22
"""Texts are hashed in chunks of about this many bytes, which bounds the temporary arrays (≈ 40 bytes per byte)."""

_ASCII_DELETE = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c).isspace()))
_ASCII_TABLE = bytes(32 if chr(c).isspace() else c for c in range(256))
_P = np.uint64(0x100000001B3)  # FNV prime: odd, so invertible modulo 2**64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))


def normalize_words(text: str) -> list[str]:
    """Lowercase, strip punctuation (removed, not replaced: "don't" → "dont"), split on whitespace."""
    return _NON_WORD.sub("", text.lower()).split()


def _normalized_bytes(text: str) -> bytes:
    """The words of `normalize_words(text)` joined by single spaces (leading/trailing spaces allowed), UTF-8."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE, _ASCII_DELETE).lower()
    return _SPACES.sub(" ", _NON_WORD.sub("", text.lower())).encode("utf-8")


@dataclass
class OverlapReport:
    """Which test items share an n-gram with the training texts, and a few of the shared n-grams.

    `contaminated_train` is filled only when asked for (`ngram_overlap(..., find_train=True)`): the training items
    that share an n-gram with some test item, i.e. what `decontaminate_train` drops.
    """

    n: int
    test_items: int
    contaminated: list[int]
    fraction: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    contaminated_train: list[int] | None = None

    def to_metadata(self) -> dict[str, Any]:
        """JSON-able summary."""
        meta: dict[str, Any] = {
            "ngram_n": self.n,
            "test_items": self.test_items,
            "contaminated_items": len(self.contaminated),
            "contaminated_fraction": self.fraction,
            "tokens": self.tokens,
        }
        if self.contaminated_train is not None:
            meta["contaminated_train_items"] = len(self.contaminated_train)
        return meta


def _coefficients(n: int) -> np.ndarray:
    """Fixed odd 64-bit coefficients, one per position of the window."""
    rng = np.random.default_rng(_COEF_SEED + n)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


_C = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant, odd: the base of the n-gram polynomial
_C_INV = np.uint64(pow(int(_C), -1, 2**64))
_POWERS: dict[str, np.ndarray] = {}


def _powers(name: str, base: np.uint64, size: int) -> np.ndarray:
    """base^(i+1) modulo 2**64 for i < size (cached per base; recomputed only for a longer chunk)."""
    cached = _POWERS.get(name)
    if cached is None or cached.size < size:
        length = max(size, _CHUNK_BYTES + (1 << 16))
        with np.errstate(over="ignore"):
            cached = np.cumprod(np.full(length, base, dtype=np.uint64), dtype=np.uint64)
        _POWERS[name] = cached
    return cached[:size]


def _window_sums(values: np.ndarray, n: int, base: np.uint64, inverse: np.uint64, tag: str) -> np.ndarray:
    """Position-free polynomial sums Σ_k base^k · values[i + k] over every window of n, via one prefix sum."""
    size = values.size
    up = _powers(tag, base, size)
    down = _powers(tag + "-inv", inverse, size)
    with np.errstate(over="ignore"):
        prefix = np.zeros(size + 1, dtype=np.uint64)
        np.cumsum(values * up, dtype=np.uint64, out=prefix[1:])
        return np.asarray((prefix[n:] - prefix[:-n]) * down[: size - n + 1])


def _chunk_ngrams(docs: list[bytes], n: int, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """N-gram hashes of a chunk of normalised texts, the chunk-relative index of the text of each, the word count."""
    joined = b" ".join(docs) + b" "
    buf = np.frombuffer(joined, dtype=np.uint8)
    edges = np.diff((buf != 32).view(np.int8), prepend=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    doc_start = np.cumsum([0] + [len(d) + 1 for d in docs[:-1]])
    per_doc = np.diff(np.append(np.searchsorted(starts, doc_start), starts.size))
    if starts.size < n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), int(starts.size)
    with np.errstate(over="ignore"):
        prefix = np.zeros(buf.size + 1, dtype=np.uint64)
        np.cumsum(buf * _powers("byte", _P, buf.size), dtype=np.uint64, out=prefix[1:])
        inverse = _powers("byte-inv", _P_INV, buf.size)
        words = _mix((prefix[ends] - prefix[starts]) * inverse[starts] + (ends - starts).astype(np.uint64))
        grams = _mix(_window_sums(words, n, _C, _C_INV, "word") + coef[0])
    owner = np.repeat(np.arange(len(docs), dtype=np.int64), per_doc)
    same_doc = owner[: owner.size - n + 1] == owner[n - 1 :]
    return grams[same_doc], owner[: owner.size - n + 1][same_doc], int(starts.size)


def ngram_hashes(texts: list[str], n: int = 13) -> tuple[np.ndarray, np.ndarray, int]:
    """Every n-gram of every text as (uint64 hashes, index of the text of each, total word count).

    Chunks of about `_CHUNK_BYTES` are hashed on a thread pool (numpy releases the GIL in its array loops)."""
    if n < 1:
        raise ValueError(f"n is {n!r}; an n-gram length must be a positive integer (13 is the GPT-3 choice)")
    coef = _coefficients(n)
    chunks: list[tuple[int, list[bytes]]] = []
    chunk: list[bytes] = []
    size = first = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}; the overlap check needs strings")
        normal = _normalized_bytes(text)
        chunk.append(normal)
        size += len(normal) + 1
        if size >= _CHUNK_BYTES:
            chunks.append((first, chunk))
            first, chunk, size = index + 1, [], 0
    if chunk:
        chunks.append((first, chunk))
    if not chunks:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0
    _powers("byte", _P, _CHUNK_BYTES)  # fill the caches before the threads read them
    _powers("byte-inv", _P_INV, _CHUNK_BYTES)
    _powers("word", _C, _CHUNK_BYTES)
    _powers("word-inv", _C_INV, _CHUNK_BYTES)
    workers = min(len(chunks), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda c: _chunk_ngrams(c[1], n, coef), chunks))
    hashes = np.concatenate([h for h, _, _ in parts])
    owners = np.concatenate([o + first for (first, _), (_, o, _) in zip(chunks, parts, strict=True)])
    return hashes, owners, sum(w for _, _, w in parts)


def _shared(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks: which hashes of `a` occur in `b`, and which of `b` occur in `a`.

    A bitmap of the smaller side, indexed by the low bits of the (already mixed) hashes, screens out almost every
    non-match of the larger side in one linear pass; only the candidates that pass are sorted and compared exactly."""
    hit_a = np.zeros(a.size, dtype=bool)
    hit_b = np.zeros(b.size, dtype=bool)
    if a.size == 0 or b.size == 0:
        return hit_a, hit_b
    small, large = (a, b) if a.size <= b.size else (b, a)
    bits = max(16, int(np.ceil(np.log2(16 * small.size))))  # ~6% of non-matches pass the screen
    low = np.uint64((1 << bits) - 1)
    seen = np.zeros(1 << bits, dtype=bool)
    seen[small & low] = True
    cand_large = np.flatnonzero(seen[large & low])
    seen[:] = False
    seen[large[cand_large] & low] = True
    cand_small = np.flatnonzero(seen[small & low])
    cand_a, cand_b = (cand_small, cand_large) if a.size <= b.size else (cand_large, cand_small)
    table_b = np.sort(b[cand_b])
    table_a = np.sort(a[cand_a])
    for cand, values, table, hit in ((cand_a, a, table_b, hit_a), (cand_b, b, table_a, hit_b)):
        if cand.size and table.size:
            queries = values[cand]
            at = np.minimum(np.searchsorted(table, queries), table.size - 1)
            hit[cand] = table[at] == queries
    return hit_a, hit_b


def ngram_overlap(
    train_texts: list[str], test_texts: list[str], n: int = 13, *, find_train: bool = False
) -> OverlapReport:
    """Flag test items that share at least one normalised n-gram with any training text (and, if asked, the
    training items that share one with any test text)."""
    train_hashes, train_owner, train_tokens = ngram_hashes(list(train_texts), n)
    test_hashes, test_owner, test_tokens = ngram_hashes(list(test_texts), n)
    hit, train_hit = _shared(test_hashes, train_hashes)
    contaminated = np.unique(test_owner[hit]).tolist()
    contaminated_train = np.unique(train_owner[train_hit]).tolist() if find_train else None

    examples: list[dict[str, Any]] = []
    for index in contaminated[:_MAX_EXAMPLES]:
        rows = np.flatnonzero(test_owner == index)
        first = int(
            np.flatnonzero(hit[rows])[0]
        )  # window position inside the text (windows never cross texts)
        words = normalize_words(test_texts[index])
        examples.append({"test_index": index, "ngram": " ".join(words[first : first + n])})
    total = len(test_texts)
    return OverlapReport(
        n=n,
        test_items=total,
        contaminated=contaminated,
        fraction=len(contaminated) / total if total else 0.0,
        examples=examples,
        tokens=train_tokens + test_tokens,
        contaminated_train=contaminated_train,
    )
