"""The label-set counting of unit masks gives the dense torch masks' counts on every route."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.dense_masks import dense_signature

from ray_dissect.concepts import counting, masks
from ray_dissect.concepts.masks import range_masks


@pytest.mark.parametrize("sparse", [0, 10 ** 9])
@pytest.mark.parametrize("chunk", [3, 1000])
def test_sorted_and_binned_sums_equal_dense_masks(monkeypatch, sparse, chunk) -> None:
    """Summing a chunk's (pair, set) entries by sorting them (always) or by dense bins
    (always), in chunks of 3 pairs or all at once, gives every range the counts of the dense
    torch masks, entries ordered by image then set."""
    monkeypatch.setattr(counting, "SPARSE_BINS", sparse)
    monkeypatch.setattr(masks, "PAIRS_PER_CHUNK", chunk)
    rng = np.random.default_rng(7)
    n, k, n_sets = 9, 3, 11
    acts = np.maximum(rng.normal(size=(n, k, 7, 7)), 0).astype(np.float32)
    set_ids = np.kron(rng.integers(0, n_sets, size=(n, 4, 4)), np.ones((28, 28), np.int64))
    set_ids[:, 5::9, 3::11] = rng.integers(0, n_sets)  # label-set changes inside runs
    valid = np.ones(n, bool)
    ranges = [(np.full(k, 0.8), np.full(k, np.inf), False),
              (np.full(k, 0.1), np.full(k, 0.9), True)]
    got = range_masks(acts, ranges, set_ids, 0, valid)
    for r, (lo, hi, inc) in enumerate(ranges):
        want = dense_signature(acts, lo, hi, inc, set_ids, valid, n_sets)
        for u in range(k):
            dense = np.zeros((n, n_sets), np.int64)
            np.add.at(dense, (got[r][u].images, got[r][u].sets), got[r][u].counts)
            np.testing.assert_array_equal(dense, want[u])
            assert np.all(np.diff(got[r][u].images * n_sets + got[r][u].sets) > 0)
