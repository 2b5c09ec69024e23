"""N-gram overlap: the planted 13-gram is found, a 12-gram is not, normalisation matches lm-eval-harness."""

import random

import pytest

from foundry_assets.curator.decontam import _normalized_bytes, ngram_overlap, normalize_words

SHARED_13 = "the quick brown fox jumps over the lazy dog near the old river bank"  # 14 words
FILLER_TRAIN = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
FILLER_TEST = "one two three four five six seven eight nine ten eleven twelve"


def test_normalize_words_lowercases_and_strips_punctuation() -> None:
    assert normalize_words("Don't STOP, (believing)!  \n Hold_on—to that… feeling.") == [
        "dont",
        "stop",
        "believing",
        "holdonto",
        "that",
        "feeling",
    ]
    assert normalize_words("Café au lait: 3.5€") == ["café", "au", "lait", "35"]


def test_planted_13_gram_is_found_and_12_gram_is_not() -> None:
    words = SHARED_13.split()
    train = [f"{FILLER_TRAIN} {' '.join(words[:13])} {FILLER_TRAIN}", "unrelated training text"]
    test = [
        f"{FILLER_TEST} {' '.join(words[:13])} {FILLER_TEST}",  # 13 shared words → contaminated
        f"{FILLER_TEST} {' '.join(words[1:13])} {FILLER_TEST}",  # only 12 of them → clean
        f"{FILLER_TEST} {FILLER_TEST}",
    ]
    report = ngram_overlap(train, test, n=13)
    assert report.contaminated == [0]
    assert report.test_items == 3
    assert report.fraction == pytest.approx(1 / 3)
    assert report.examples == [{"test_index": 0, "ngram": " ".join(words[:13])}]
    assert report.to_metadata()["contaminated_items"] == 1


def test_overlap_survives_case_punctuation_and_line_breaks() -> None:
    train = [SHARED_13.upper().replace(" ", ",\n ")]
    test = [f"Prefix: {SHARED_13}.", "The quick brown fox."]
    assert ngram_overlap(train, test).contaminated == [0]


def test_short_texts_have_no_ngrams_and_smaller_n_works() -> None:
    assert ngram_overlap(["a b c"], ["a b c"], n=13).contaminated == []
    assert ngram_overlap(["a b c"], ["x a b c y", "a b"], n=3).contaminated == [0]
    empty = ngram_overlap([], [])
    assert (empty.contaminated, empty.fraction) == ([], 0.0)
    with pytest.raises(ValueError, match="n-gram"):
        ngram_overlap(["a"], ["a"], n=0)


def test_no_false_positives_on_many_distinct_texts() -> None:
    train = [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(300)]
    test = [" ".join(f"w{i}x{j}" for j in range(40)) for i in range(300, 400)]
    test.append(" ".join(f"w5x{j}" for j in range(10, 23)))  # exactly 13 words of train[5]
    report = ngram_overlap(train, test)
    assert report.contaminated == [100]


def test_vectorised_normalisation_matches_normalize_words() -> None:
    samples = [
        "Don't STOP, (believing)!  \n Hold_on—to that… feeling.",
        "Café au lait: 3.5€ \u00a0non-breaking\u2003em space\tTAB",
        "ascii\x1cseparators\x1fand\x0bvertical\x0ctabs, under_score",
        "",
        "   ",
        "ÉCOLE, «guillemets» — Straße ΣΊΣΥΦΟΣ",
    ]
    for text in samples:
        assert _normalized_bytes(text).decode("utf-8").split() == normalize_words(text), text


def test_contaminated_training_items_are_found_too() -> None:
    words = SHARED_13.split()
    train = [FILLER_TRAIN, f"{FILLER_TRAIN} {' '.join(words[:13])}", "short"]
    test = [f"{' '.join(words[:13])} {FILLER_TEST}", FILLER_TEST]
    report = ngram_overlap(train, test, find_train=True)
    assert (report.contaminated, report.contaminated_train) == ([0], [1])
    assert report.tokens == sum(len(normalize_words(t)) for t in train + test)
    assert report.to_metadata()["contaminated_train_items"] == 1


def _naive_overlap(train: list[str], test: list[str], n: int) -> tuple[list[int], list[int]]:
    """The rule with Python sets of word tuples (test sizes only)."""

    def grams(text: str) -> set[tuple[str, ...]]:
        words = normalize_words(text)
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    train_grams = [grams(t) for t in train]
    test_grams = [grams(t) for t in test]
    all_train = set().union(*train_grams)
    all_test = set().union(*test_grams)
    return (
        [i for i, g in enumerate(test_grams) if g & all_train],
        [i for i, g in enumerate(train_grams) if g & all_test],
    )


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_hashing_agrees_with_python_sets(n: int, seed: int) -> None:
    rng = random.Random(seed)
    vocab = [
        "a",
        "to",
        "eightchr",  # 8 bytes: one load
        "ninechars",  # 9: first and last loads overlap
        "sixteen_bytes_xx",  # 16 after normalisation drops "_": 15
        "abcdefghijklmnopq",  # 17: one middle piece
        "abcdefghXjklmnopq",  # differs from the above only in the middle
        "abcdefghijklmnopqrstuvwxyz0123456789abcdefgh",  # long: several middle pieces
        "abcdefghijklmnopqrstuvwxyz0123456789abcdefgX",
        "Café",
        "straße",
        "ΣΊΣΥΦΟΣ",
        "don't",
        "end!",
        "x\x01y",  # the chunk separator inside a text: that chunk takes the per-text path
    ]
    if seed == 0:  # all ASCII, no separator: the one-translate fast path
        vocab = [w for w in vocab if w.isascii() and "\x01" not in w]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randrange(0, 12))) for _ in range(160)]
    train, test = texts[:100], texts[100:]
    report = ngram_overlap(train, test, n=n, find_train=True)
    assert (report.contaminated, report.contaminated_train) == _naive_overlap(train, test, n)
    assert report.tokens == sum(len(normalize_words(t)) for t in texts)


def test_long_words_differing_in_the_middle_do_not_match() -> None:
    base = "x" * 40
    other = "x" * 20 + "y" + "x" * 19
    assert ngram_overlap([base], [other], n=1).contaminated == []
    assert ngram_overlap([base], [base.upper()], n=1).contaminated == [0]


def test_either_side_may_be_the_larger() -> None:
    words = SHARED_13.split()
    small_train = [" ".join(words[:13])]
    big_test = [FILLER_TEST * 50, f"{FILLER_TEST} {' '.join(words[:13])}", FILLER_TEST * 50]
    report = ngram_overlap(small_train, big_test, find_train=True)
    assert (report.contaminated, report.contaminated_train) == ([1], [0])
    assert report.examples == [{"test_index": 1, "ngram": " ".join(words[:13])}]
