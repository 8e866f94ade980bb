"""Tests for ray_dissect.units.topk against a dense per-unit Python sort."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_dissect.errors import SpecError
from ray_dissect.units.topk import TopK, random_samples


def dense_rule_a(acts: np.ndarray, valid: np.ndarray, k: int) -> tuple[list, list]:
    """Per unit: sort (max desc, index asc) over valid images with a non-NaN max."""
    indices, values = [], []
    for u in range(acts.shape[1]):
        pool = []
        for i in range(acts.shape[0]):
            m = float(np.max(acts[i, u]))
            if valid[i] and not math.isnan(m) and m != -math.inf:
                pool.append((-m, i))
        pool.sort()
        top = pool[:k]
        indices.append([i for _, i in top] + [-1] * (k - len(top)))
        values.append([-m for m, _ in top] + [math.nan] * (k - len(top)))
    return indices, values


def dense_rule_b(counts: np.ndarray, k: int) -> tuple[list, list]:
    """Per unit: sort (count desc, index asc) over images with count > 0."""
    indices, values = [], []
    for u in range(counts.shape[1]):
        pool = sorted((-int(counts[i, u]), i) for i in range(counts.shape[0]) if counts[i, u] > 0)
        top = pool[:k]
        indices.append([i for _, i in top] + [-1] * (k - len(top)))
        values.append([-c for c, _ in top] + [0] * (k - len(top)))
    return indices, values


def planted_maps(rng: np.random.Generator, n: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    """Small integer-valued maps (many ties), NaN pixels, -0.0 and invalid images."""
    acts = rng.integers(-3, 4, size=(n, units, 3, 3)).astype(np.float32)
    acts[rng.random((n, units)) < 0.1] = -0.0
    nan_at = rng.random((n, units, 3, 3)) < 0.02
    acts[nan_at] = np.nan
    valid = rng.random(n) > 0.2
    return acts, valid


def shard_and_add(acc: TopK, acts: np.ndarray, valid: np.ndarray, cuts: list[int]) -> TopK:
    """Add maps to acc shard by shard at the given cut points."""
    bounds = [0, *cuts, acts.shape[0]]
    for lo, hi in itertools.pairwise(bounds):
        acc.add_maps(lo, acts[lo:hi], valid[lo:hi])
    return acc


def test_rule_a_equals_dense_sort_with_ties_nans_and_invalid() -> None:
    """Rule A picks the same images and maxima as a dense sort, ties to the lower index."""
    rng = np.random.default_rng(0)
    acts, valid = planted_maps(rng, 40, 6)
    acc = shard_and_add(TopK(5, 6), acts, valid, [7, 8, 25])
    indices, values = acc.result()
    ref_i, ref_v = dense_rule_a(acts, valid, 5)
    assert indices.dtype == np.int64 and values.dtype == np.float32
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(values, np.array(ref_v, dtype=np.float32))


def test_rule_a_by_mean_equals_dense_sort_of_means() -> None:
    """``score="mean"`` ranks by each map's mean (float64 sum, as a plain Python loop gives,
    rounded to float32): same images and values as a dense sort, NaN maps not selectable,
    under any sharding; the ranking differs from the maxima's on these maps."""
    rng = np.random.default_rng(3)
    acts, valid = planted_maps(rng, 40, 6)
    acc = TopK(5, 6)
    for lo, hi in ((0, 9), (9, 10), (10, 40)):
        acc.add_maps(lo, acts[lo:hi], valid[lo:hi], score="mean")
    indices, values = acc.result()
    means = np.array([[np.float32(sum(float(v) for v in acts[i, u].ravel()) / 9)
                       for u in range(6)] for i in range(40)])
    ref_i, ref_v = dense_rule_a(means[:, :, None, None], valid, 5)
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(values, np.array(ref_v, dtype=np.float32))
    by_max = shard_and_add(TopK(5, 6), acts, valid, []).result()[0]
    assert not np.array_equal(indices, by_max)


def test_rule_a_pads_when_fewer_than_k_selectable() -> None:
    """With fewer selectable images than k, rows are padded with -1 and NaN."""
    acts = np.zeros((4, 2, 2, 2), np.float32)
    acts[:, 0] = np.arange(4, dtype=np.float32)[:, None, None]
    acts[2, 1, 0, 0] = np.nan
    acts[3, 1] = -np.inf
    valid = np.array([True, False, True, True])
    acc = TopK(3, 2)
    acc.add_maps(10, acts, valid)
    indices, values = acc.result()
    np.testing.assert_array_equal(indices, [[13, 12, 10], [10, -1, -1]])
    np.testing.assert_array_equal(values[0], [3, 2, 0])
    assert values[1, 0] == 0 and np.isnan(values[1, 1:]).all()


def test_negative_zero_ties_with_zero_by_index() -> None:
    """-0.0 and +0.0 maxima tie (broken to the lower index) and come back as +0.0."""
    acc = TopK(3, 1)
    acc.add(0, np.array([[-0.0], [0.0], [-0.0]], np.float32))
    indices, values = acc.result()
    np.testing.assert_array_equal(indices, [[0, 1, 2]])
    assert not np.signbit(values).any()


def test_rule_a_many_units_matches_vectorised_reference() -> None:
    """A 4,096-unit shard split into internal chunks equals a lexsort over all images."""
    rng = np.random.default_rng(1)
    n, units, k = 700, 4096, 10
    maxima = rng.integers(0, 50, size=(n, units)).astype(np.float32)
    acc = TopK(k, units)
    acc.add(123, maxima[:300])
    acc.add(423, maxima[300:])
    indices, values = acc.result()
    order = np.lexsort((np.arange(n)[:, None].repeat(units, 1), -maxima), axis=0)[:k].T
    np.testing.assert_array_equal(indices, order + 123)
    np.testing.assert_array_equal(values, np.take_along_axis(maxima.T, order, axis=1))


def test_rule_b_counts_equal_dense_sort_and_skip_zero() -> None:
    """Rule B keeps the largest pixel counts, ties to the lower index, never a zero count."""
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 4, size=(30, 5)).astype(np.int64)
    counts[:, 4] = 0
    counts[[3, 17], 4] = 9
    acc = TopK(4, 5, dtype=np.int64)
    acc.add(0, counts[:11])
    acc.add(11, counts[11:])
    indices, values = acc.result()
    ref_i, ref_v = dense_rule_b(counts, 4)
    assert values.dtype == np.int64
    np.testing.assert_array_equal(indices, ref_i)
    np.testing.assert_array_equal(values, ref_v)
    np.testing.assert_array_equal(indices[4], [3, 17, -1, -1])


def test_rule_b_units_by_ranges_shape() -> None:
    """A (U, R) accumulator equals one (U,) accumulator per range."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 6, size=(25, 3, 2)).astype(np.int64)
    joint = TopK(3, (3, 2), dtype=np.int64)
    joint.add(5, counts)
    j_idx, j_val = joint.result()
    assert j_idx.shape == (3, 2, 3)
    for r in range(2):
        single = TopK(3, 3, dtype=np.int64)
        single.add(5, counts[:, :, r])
        s_idx, s_val = single.result()
        np.testing.assert_array_equal(j_idx[:, r], s_idx)
        np.testing.assert_array_equal(j_val[:, r], s_val)


@settings(max_examples=40, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 29), max_size=5, unique=True).map(sorted),
    order_seed=st.integers(0, 2**16),
    k=st.integers(1, 6),
)
def test_merge_any_order_and_grouping_equals_one_pass(
    cuts: list[int], order_seed: int, k: int
) -> None:
    """Per-shard partials merged in any order and grouping equal the one-pass result."""
    rng = np.random.default_rng(4)
    acts, valid = planted_maps(rng, 30, 4)
    one_pass = TopK(k, 4)
    one_pass.add_maps(0, acts, valid)
    bounds = [0, *cuts, 30]
    partials = []
    for lo, hi in itertools.pairwise(bounds):
        part = TopK(k, 4)
        part.add_maps(lo, acts[lo:hi], valid[lo:hi])
        partials.append(TopK.from_state(part.state_dict()))
    order = np.random.default_rng(order_seed)
    while len(partials) > 1:
        a, b = order.choice(len(partials), size=2, replace=False)
        merged = partials[a].merge(partials[b])
        partials = [p for i, p in enumerate(partials) if i not in (a, b)] + [merged]
    for got, want in zip(partials[0].result(), one_pass.result(), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(partials[0].spans, [[0, 30]])


def test_state_dict_round_trip_is_plain_numpy() -> None:
    """state_dict holds plain arrays and from_state restores k, units, dtype and selection."""
    acc = TopK(2, 3, dtype=np.int64)
    acc.add(4, np.array([[1, 0, 5], [2, 0, 5], [2, 7, 0]], dtype=np.int64))
    state = acc.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.testing.assert_array_equal(state["spans"], [[4, 7]])
    back = TopK.from_state({key: v.copy() for key, v in state.items()})
    assert (back.k, back.units, back.dtype) == (2, (3,), np.dtype(np.int64))
    np.testing.assert_array_equal(back.result()[0], [[5, 6], [6, -1], [4, 5]])
    np.testing.assert_array_equal(back.result()[1], [[2, 2], [7, 0], [5, 5]])


def test_overlapping_shards_and_bad_input_raise() -> None:
    """An overlapping add or merge, a wrong score shape or a mismatched merge raises."""
    acc = TopK(2, 2)
    acc.add(0, np.ones((3, 2), np.float32))
    acc.add(5, np.ones((2, 2), np.float32))
    with pytest.raises(SpecError, match="added twice"):
        acc.add(2, np.full((1, 2), 5, np.float32))
    other = TopK(2, 2)
    other.add(6, np.ones((1, 2), np.float32))
    with pytest.raises(SpecError, match="added twice"):
        acc.merge(other)
    with pytest.raises(SpecError):
        acc.add(10, np.ones((3, 4), np.float32))
    with pytest.raises(SpecError):
        TopK(2, 2, dtype=np.int64).add(0, np.ones((1, 2), np.float32))
    with pytest.raises(SpecError):
        acc.merge(TopK(3, 2))
    np.testing.assert_array_equal(acc.spans, [[0, 3], [5, 7]])
    np.testing.assert_array_equal(acc.result()[0], [[0, 1], [0, 1]])


def test_random_samples_deterministic_and_eligible() -> None:
    """Samples are eligible, sorted, padded, reproducible, and equal for mask or list input."""
    rng = np.random.default_rng(5)
    mask = rng.random((200, 6)) < 0.3
    mask[:, 5] = False
    mask[[7, 9], 5] = True
    got = random_samples(mask, 4, seed=11)
    lists = [np.flatnonzero(mask[:, u])[::-1].tolist() for u in range(6)]
    np.testing.assert_array_equal(got, random_samples(lists, 4, seed=11))
    np.testing.assert_array_equal(got, random_samples(mask, 4, seed=11))
    for u in range(5):
        assert set(got[u]) <= set(np.flatnonzero(mask[:, u]))
        assert len(set(got[u])) == 4 and list(got[u]) == sorted(got[u])
    np.testing.assert_array_equal(got[5], [7, 9, -1, -1])
    assert not np.array_equal(got[:5], random_samples(mask, 4, seed=12)[:5])


def test_random_samples_per_unit_independent_of_other_units() -> None:
    """A unit's draw depends only on (seed, unit, its eligible set)."""
    rng = np.random.default_rng(6)
    mask = rng.random((100, 3)) < 0.5
    other = mask.copy()
    other[:, 0] = ~other[:, 0]
    np.testing.assert_array_equal(random_samples(mask, 5, 3)[1:], random_samples(other, 5, 3)[1:])
