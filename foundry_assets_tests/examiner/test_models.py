"""Batching held-out items: longest first, capped by rows and by padded tokens, every item in exactly one batch."""

from foundry_assets.examiner.models import batches


def test_batches_are_longest_first_and_capped_by_rows_and_padded_tokens() -> None:
    assert batches([3, 10, 5, 10], rows=2, tokens=100) == [[1, 3], [2, 0]]
    assert batches([10, 10, 10, 2], rows=8, tokens=25) == [[0, 1], [2, 3]]
    assert batches([40, 2], rows=8, tokens=25) == [[0], [1]]  # a row longer than the cap still gets a batch
    assert batches([], rows=8, tokens=25) == []
