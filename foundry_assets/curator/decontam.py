"""N-gram contamination check between a training set and a test set (GPT-3 / lm-eval-harness style).

Texts are normalised (lowercased, punctuation removed, split on whitespace: `normalize_words`); a test item is
contaminated when any of its n-grams (default 13 words, as in the GPT-3 paper) also occurs in the training texts.
Texts shorter than n words have no n-grams and are never flagged.

Nothing here loops in Python per word or per n-gram. A chunk of texts is joined with a separator and normalised with
C-level string operations (one `bytes.translate` over the chunk when it is ASCII, a regex per text otherwise). Words
are found from the byte mask and hashed from unaligned 8-byte loads of the buffer (a word of up to 8 bytes is one load;
longer words fold in their other 8-byte pieces; see `_word_hashes`), so hashing costs a few numpy passes per word,
not per byte. Each window of n word hashes becomes one 64-bit n-gram hash, a position-free polynomial (odd base)
computed from one prefix sum (numpy wraps uint64 arithmetic modulo 2⁶⁴); windows that would cross two texts are
dropped. The training and test hashes are then matched with a two-bitmap screen and `searchsorted` on the few
candidates (8 bytes per n-gram). A false match needs a 64-bit collision (probability ≈ m²/2⁶⁴ for m distinct
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
"""Texts are hashed in chunks of about this many characters, which bounds the temporary arrays (≈ 10 per byte)."""

_ASCII_DELETE = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c).isspace()))
_ASCII_TABLE = bytes(32 if chr(c).isspace() else c for c in range(256))
_P = np.uint64(0x100000001B3)  # FNV prime: folds the pieces of long words
_SEPARATOR = " \x01 "
_SEP_DELETE = bytes(c for c in range(128) if not (chr(c).isalnum() or chr(c).isspace() or c == 1))
_SEP_TABLE = bytes(
    33 if c == 1 else 32 if chr(c).isspace() else ord(chr(c).lower()) if c < 128 else c for c in range(256)
)
_PAD = bytes(8)


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
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic), in place on `h` (returned).

    In-place passes matter here: a fresh temporary per operation costs page faults comparable to the arithmetic."""
    tmp = np.empty_like(h)
    with np.errstate(over="ignore"):
        h ^= np.right_shift(h, np.uint64(30), out=tmp)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= np.right_shift(h, np.uint64(27), out=tmp)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= np.right_shift(h, np.uint64(31), out=tmp)
    return h


_C = np.uint64(0x9E3779B97F4A7C15)  # golden-ratio constant, odd: the base of the n-gram polynomial
_C_INV = np.uint64(pow(int(_C), -1, 2**64))
_POWERS: dict[str, np.ndarray] = {}


def _scramble(h: np.ndarray) -> np.ndarray:
    """A cheaper bijective mix (multiply, xor-shift, multiply), in place: enough to spread a word's bytes over all
    64 bits before the n-gram polynomial, which is all the word hash needs (it is never compared on its own)."""
    tmp = np.empty_like(h)
    with np.errstate(over="ignore"):
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= np.right_shift(h, np.uint64(29), out=tmp)
        h *= np.uint64(0x94D049BB133111EB)
    return h


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
        prefix = np.empty(size + 1, dtype=np.uint64)
        prefix[0] = 0
        np.multiply(values, up, out=prefix[1:])
        np.cumsum(prefix[1:], dtype=np.uint64, out=prefix[1:])
        windows = np.subtract(prefix[n:], prefix[:-n], out=prefix[: size - n + 1])
        windows *= down[: size - n + 1]
        return windows


def _load8(padded: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The 8 bytes starting at each offset of `padded` (uint8) as little-endian uint64 (unaligned gathers)."""
    view = np.ndarray(shape=(padded.size - 7,), dtype="<u8", buffer=padded, strides=(1,))
    return np.asarray(view[at], dtype=np.uint64)


_TAIL_SHIFT = np.array([64 - 8 * k if k else 0 for k in range(9)], dtype=np.uint64)
"""Right shift that keeps the last k bytes of an 8-byte little-endian load (k ≤ 8); 0 for k ≥ 8."""


def _word_hashes(padded: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A 64-bit hash of every word (byte ranges of `padded`, which has 8 spare zero bytes at each end).

    A word of up to 8 bytes is exactly its last-8-bytes load shifted down to its length; a longer word also folds in
    its first 8 bytes (which, with the last 8 and the length, determine a word of up to 16 bytes) and, beyond 16, every
    further 8-byte piece: a few vectorised passes over the long words only."""
    length = ends - starts
    with np.errstate(over="ignore"):
        h = _load8(padded, ends - 8)
        h >>= _TAIL_SHIFT[np.minimum(length, 8)]
        h ^= length.astype(np.uint64) * _C
        _scramble(h)
        long_words = np.flatnonzero(length > 8)
        if long_words.size:
            h[long_words] = _mix(h[long_words] * _P + _load8(padded, starts[long_words]))
            long_words = long_words[length[long_words] > 16]
        if long_words.size:
            at = starts[long_words] + 8
            stop = ends[long_words] - 8
            acc = h[long_words]
            # the middle pieces, 8 bytes at a time (the last may overlap the tail: still exact)
            while at.size:
                acc = _mix(acc * _P + _load8(padded, np.minimum(at, stop)))
                h[long_words] = acc
                more = at + 8 < stop
                long_words, at, stop, acc = long_words[more], at[more] + 8, stop[more], acc[more]
    return h


def _chunk_ngrams(
    texts: list[str], n: int, coef: np.ndarray, screen: "_Screen | None" = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """N-gram hashes of a chunk of texts, the chunk-relative index of the text of each, the chunk's word count
    (only the n-grams that pass `screen`, when given).

    The texts are joined with " \\x01 ", which normalisation turns into a "!" word of its own (a real "!" is
    punctuation and removed), and, when all ASCII (and free of \\x01), normalised in one `bytes.translate` over the
    whole chunk; otherwise each text goes through `_normalized_bytes`. A window holding a "!" crosses two texts and
    is dropped."""
    joined = _SEPARATOR.join(texts)
    if joined.isascii() and joined.count("\x01") == len(texts) - 1:
        data = joined.encode("ascii").translate(_SEP_TABLE, _SEP_DELETE)  # the table lowercases too
    else:
        data = b" ! ".join(_normalized_bytes(t) for t in texts)
    padded = np.frombuffer(_PAD + data + _PAD + b"\0", dtype=np.uint8)
    word = padded > 32  # after normalisation: word bytes, "!" separators (33), spaces (32), padding (0)
    bounds = np.flatnonzero(word[1:] != word[:-1]) + 1
    starts, ends = bounds[0::2], bounds[1::2]
    separator = padded[starts] == 33
    n_words = int(starts.size) - len(texts) + 1
    if n_words < n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), n_words
    seen = np.zeros(starts.size + 1, dtype=np.int32)
    np.cumsum(separator, out=seen[1:])  # seen[i]: separators before word i = the index of its text
    words = _word_hashes(padded, starts, ends)
    with np.errstate(over="ignore"):
        grams = _window_sums(words, n, _C, _C_INV, "word")
        grams += coef[0]
    clean = seen[n:] == seen[: seen.size - n]  # no separator inside the window
    if screen is not None:
        clean &= screen.mask(grams)
    return grams[clean], seen[: seen.size - n][clean].astype(np.int64), n_words


class _Screen:
    """Approximate membership in a set of (well mixed) uint64 hashes: a bit-packed bitmap indexed by the high bits
    (2 MB per million members: it stays in cache, unlike a byte per slot), then a byte bitmap indexed by the low
    bits for the few that pass. Never a false negative; a non-member passes both with probability ≈ 1/256, so only a
    few candidates need the exact (sorted) comparison."""

    def __init__(self, values: np.ndarray) -> None:
        bits = max(16, int(np.ceil(np.log2(16 * max(values.size, 1)))))
        self.low = np.uint64((1 << bits) - 1)
        self.high = np.uint64(64 - bits)
        seen_high = np.zeros(1 << bits, dtype=bool)
        seen_high[values >> self.high] = True
        self.packed = np.packbits(seen_high, bitorder="little").view(np.uint64)
        self.seen_low = seen_high  # reused: cleared, then filled by the low bits
        self.seen_low[:] = False
        self.seen_low[values & self.low] = True

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of the values that may be members."""
        slot = values >> self.high
        words = self.packed[slot >> np.uint64(6)]
        slot &= np.uint64(63)
        words >>= slot
        out = (words & np.uint64(1)).astype(bool)
        hot = np.flatnonzero(out)
        out[hot] = self.seen_low[values[hot] & self.low]
        return out


def _ngram_hashes(
    texts: list[str], n: int, screen: _Screen | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """`ngram_hashes`, keeping only the n-grams that pass `screen` when one is given (the word count is of all)."""
    if n < 1:
        raise ValueError(f"n is {n!r}; an n-gram length must be a positive integer (13 is the GPT-3 choice)")
    coef = _coefficients(n)
    chunks: list[tuple[int, list[str]]] = []
    first = size = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}; the overlap check needs strings")
        size += len(text) + 1
        if size >= _CHUNK_BYTES:
            chunks.append((first, texts[first : index + 1]))
            first, size = index + 1, 0
    if first < len(texts):
        chunks.append((first, texts[first:]))
    if not chunks:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64), 0
    _powers("word", _C, _CHUNK_BYTES)  # fill the caches before the threads read them
    _powers("word-inv", _C_INV, _CHUNK_BYTES)
    workers = min(len(chunks), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda c: _chunk_ngrams(c[1], n, coef, screen), chunks))
    hashes = np.concatenate([h for h, _, _ in parts])
    owners = np.concatenate([o + first for (first, _), (_, o, _) in zip(chunks, parts, strict=True)])
    return hashes, owners, sum(w for _, _, w in parts)


def ngram_hashes(texts: list[str], n: int = 13) -> tuple[np.ndarray, np.ndarray, int]:
    """Every n-gram of every text as (uint64 hashes, index of the text of each, total word count).

    Chunks of about `_CHUNK_BYTES` are hashed on a thread pool (numpy releases the GIL in its array loops)."""
    return _ngram_hashes(list(texts), n)


def _members(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Boolean mask of `values` found in `table` (any order; exact)."""
    hit = np.zeros(values.size, dtype=bool)
    if values.size == 0 or table.size == 0:
        return hit
    table = np.sort(table)
    cand = np.flatnonzero(_Screen(table).mask(values))
    if cand.size:
        at = np.minimum(np.searchsorted(table, values[cand]), table.size - 1)
        hit[cand] = table[at] == values[cand]
    return hit


def ngram_overlap(
    train_texts: list[str], test_texts: list[str], n: int = 13, *, find_train: bool = False
) -> OverlapReport:
    """Flag test items that share at least one normalised n-gram with any training text (and, if asked, the
    training items that share one with any test text).

    The side with less text (usually the test set) is hashed in full; the other side is streamed through a bitmap
    screen of those hashes chunk by chunk, so only its few candidate n-grams are ever held, then both are compared
    exactly."""
    train_texts, test_texts = list(train_texts), list(test_texts)
    test_smaller = sum(map(len, test_texts)) <= sum(map(len, train_texts))
    full, streamed = (test_texts, train_texts) if test_smaller else (train_texts, test_texts)
    full_hashes, full_owner, full_tokens = _ngram_hashes(full, n)
    cand_hashes, cand_owner, streamed_tokens = _ngram_hashes(streamed, n, _Screen(full_hashes))
    full_hit = _members(full_hashes, cand_hashes)
    shared_hashes = full_hashes[full_hit]
    cand_hit = _members(cand_hashes, shared_hashes)
    shared_full = np.unique(full_owner[full_hit])
    shared_streamed = np.unique(cand_owner[cand_hit])
    contaminated_test, contaminated_train = (
        (shared_full, shared_streamed) if test_smaller else (shared_streamed, shared_full)
    )
    contaminated = contaminated_test.tolist()

    examples: list[dict[str, Any]] = []
    for index in contaminated[:_MAX_EXAMPLES]:
        hashes, _, _ = _ngram_hashes([test_texts[index]], n)  # one text: its windows in word order
        first = int(np.flatnonzero(_members(hashes, shared_hashes))[0])
        words = normalize_words(test_texts[index])
        examples.append({"test_index": index, "ngram": " ".join(words[first : first + n])})
    total = len(test_texts)
    return OverlapReport(
        n=n,
        test_items=total,
        contaminated=contaminated,
        fraction=len(contaminated) / total if total else 0.0,
        examples=examples,
        tokens=full_tokens + streamed_tokens,
        contaminated_train=contaminated_train.tolist() if find_train else None,
    )
