"""The compiled kernels equal the numpy reference and dense torch masks, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.kernel_maps import dense_check, same, tricky, upsampled

from ray_dissect.concepts import column_kernels, kernels
from ray_dissect.concepts.masks import UnitMask, firing_pairs, range_masks
from ray_dissect.concepts.tiles import Grid

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


def _masks(monkeypatch, which: str, *args) -> list[list[UnitMask]]:
    monkeypatch.setenv(kernels.KERNEL_ENV, which)
    assert kernels.kernel_name() == which
    return range_masks(*args)


@pytest.mark.parametrize(("seed", "src", "shape"), [(0, (7, 7), (112, 112)),
                                                   (1, (6, 5), (113, 47)),
                                                   (2, (4, 4), (4, 4)),
                                                   (3, (9, 8), (5, 6))])
def test_numba_masks_equal_numpy_and_dense_torch_masks(monkeypatch, seed, src, shape) -> None:
    """Ties, near-ties, non-finite maps, zero maps, inclusive and per-image bounds: the numba
    signatures equal the numpy tile walk's array for array and the dense torch masks."""
    acts, ranges, set_ids, valid = tricky(seed, src, shape)
    args = (acts, ranges, set_ids, 30, valid)
    fast = _masks(monkeypatch, "numba", *args)
    same(fast, _masks(monkeypatch, "numpy", *args))
    dense_check(fast, acts, ranges, set_ids, valid, 30)


def test_near_ties_and_non_finite_maps_go_through_torch() -> None:
    """The kernel leaves undecided exactly the (pair, range)s it must: the inf map in every
    range it fires for, and the ranges whose bound is a pixel's own value."""


    acts, ranges, set_ids, _ = tricky(0, (7, 7), (112, 112))
    n, k = acts.shape[:2]
    bounds = [(np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k)), inc)
              for lo, hi, inc in ranges]
    images, units = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(k), indexing="ij"))
    fires = [np.ones(n * k, bool) for _ in bounds]
    found = kernels.count_ranges(acts, images, units, bounds, fires,
                                 Grid.make((7, 7), (112, 112)), set_ids)
    inf_pair = 4 * k + 0
    assert found.redo[inf_pair].all()
    tie = np.float64(upsampled(acts, (112, 112))[1, :, 56, 37])  # the fixture's tie pixels
    for u in range(k):  # a bound equal to a nonzero pixel value is for torch to decide; an
        # exact 0 (zero cell, or zero corners at a clamped edge) is decided exactly
        assert found.redo[k + u, 1] == found.redo[k + u, 2] == (tie[u] != 0)
    assert not found.redo[:, 0][np.isfinite(acts).reshape(n * k, -1).all(axis=1)].all()


def test_group_sets_equals_unique_per_image() -> None:
    """Per image: its distinct sets ascending and every pixel's index among them, for images
    of one set, a few, and more than SMALL_SETS (the sorting route)."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 4, size=(5, 20, 30)) * 1000 + 7
    ids[1] = 42
    ids[2] = rng.integers(0, 10_000, size=(20, 30))
    ids[3, :, :15] = rng.integers(0, kernels.SMALL_SETS, size=(20, 15))
    local, indptr, sets = kernels.group_sets(ids)
    for i in range(len(ids)):
        distinct, inverse = np.unique(ids[i], return_inverse=True)
        np.testing.assert_array_equal(sets[indptr[i]:indptr[i + 1]], distinct)
        np.testing.assert_array_equal(local[i], inverse.ravel())
    assert np.diff(indptr)[2] > kernels.SMALL_SETS and np.diff(indptr)[1] == 1


def test_kernel_choice_follows_the_environment(monkeypatch) -> None:
    """numba by default where it imports; RAY_DISSECT_KERNELS=numpy forces the reference."""
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    assert kernels.kernel_name() == "numba"
    monkeypatch.setenv(kernels.KERNEL_ENV, "numpy")
    assert kernels.kernel_name() == "numpy"


def test_compiled_unique_columns_equals_numpy_grouping(monkeypatch) -> None:
    """The concept index's per-pixel tuple grouping: same distinct columns in the same order,
    inverse and counts, for label maps with runs, no layer, and one pixel."""
    from ray_dissect.concepts.index import pixel_label_sets, unique_columns

    rng = np.random.default_rng(4)
    maps = np.kron(rng.integers(0, 6, size=(3, 5, 5)), np.ones((1, 9, 9), np.int64))
    maps[:, ::7] = rng.integers(0, 500, size=(3, 7, 45))
    cases = [maps.astype(np.int32).reshape(3, -1), np.zeros((0, 30), np.int32),
             np.array([[3], [1]], np.int32)]
    for cols in cases:
        monkeypatch.setenv(kernels.KERNEL_ENV, "numba")
        fast = unique_columns(cols)
        monkeypatch.setenv(kernels.KERNEL_ENV, "numpy")
        ref = unique_columns(cols)
        for a, b in zip(fast, ref, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    whole = np.array([900, 7], np.int32)
    for which in ("numba", "numpy"):
        monkeypatch.setenv(kernels.KERNEL_ENV, which)
        got = pixel_label_sets(maps.astype(np.int32), whole, 6)
        if which == "numba":
            first = got
    for a, b in zip(first, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_range_and_no_firing_pair(monkeypatch) -> None:
    """No ranges gives no masks; ranges no map reaches give empty signatures, as numpy."""
    acts = np.zeros((3, 2, 4, 4), np.float32)
    ids = np.zeros((3, 8, 8), np.int64)
    valid = np.ones(3, bool)
    assert _masks(monkeypatch, "numba", acts, [], ids, 0, valid) == []
    high = [(np.ones(2), np.full(2, np.inf), False)]
    got = _masks(monkeypatch, "numba", acts, high, ids, 0, valid)
    same(got, _masks(monkeypatch, "numpy", acts, high, ids, 0, valid))
    assert [m.area for m in got[0]] == [0, 0]


def test_column_split_counts_each_bound() -> None:
    """On ascending columns with repeated values and bounds equal to them, the slots of
    each interval are those a pixel-by-pixel test finds (both strictnesses, any order)."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 17))
        vals = np.sort(rng.choice([0.0, 0.25, 0.5, 0.5, 1.0, 2.0], size=n)).astype(np.float64)
        b = np.sort(rng.choice(np.concatenate([vals, [-1.0, 0.3, 3.0]]), size=4))
        surely_lo, surely_hi, maybe_lo, maybe_hi = b[1], b[2], b[0], b[3]
        m0, i0, i1, m1 = column_kernels.column_split(vals, n, surely_lo, surely_hi,
                                                     maybe_lo, maybe_hi)
        surely = (vals > surely_lo) & (vals < surely_hi)
        maybe = (vals >= maybe_lo) & (vals <= maybe_hi)
        got_surely = np.zeros(n, bool)
        got_surely[i0:max(i0, i1)] = True
        np.testing.assert_array_equal(got_surely, surely)
        if surely.any():  # the maybe interval is only solved where a value lies in a margin
            assert m0 <= i0 and i1 <= m1
            got_maybe = np.zeros(n, bool)
            got_maybe[m0:m1] = True
            np.testing.assert_array_equal(got_maybe, maybe)
        else:
            assert (m0, m1) == (int(np.count_nonzero(vals < maybe_lo)),
                                int(np.count_nonzero(vals <= maybe_hi)))


def test_image_runs_are_the_column_runs_of_equal_sets() -> None:
    """Column-major sets and, per pixel, the row where its column's run of one set ends."""
    rng = np.random.default_rng(6)
    local = np.repeat(rng.integers(0, 3, size=(9, 7)), 2, axis=0).astype(np.int32)  # (18, 7)
    colset, end = np.empty(local.size, np.int32), np.empty(local.size, np.int32)
    column_kernels.image_runs(local.ravel(), 7, colset, end)
    np.testing.assert_array_equal(colset.reshape(7, 18), local.T)
    for x in range(7):
        for y in range(18):
            stop = y + 1
            while stop < 18 and local[stop, x] == local[y, x]:
                stop += 1
            assert end[x * 18 + y] == stop


@pytest.mark.parametrize(("units", "n_ranges"), [(1, 2), (4, 10)])
def test_both_counting_routes_equal_numpy_and_dense_masks(monkeypatch, units, n_ranges) -> None:
    """Images with few (pair, range)s count pixel by pixel, with many through the column
    runs (RUNS_MIN): both routes give the numpy tile walk's and the dense masks'
    signatures on the tricky maps (ties, near-ties, inf and NaN maps, zero cells)."""
    acts, ranges, set_ids, valid = tricky(4, (7, 7), (112, 112))
    acts, ranges = np.ascontiguousarray(acts[:, :units]), [
        (np.broadcast_to(lo, (len(acts), 4))[:, :units] if np.ndim(lo) == 2 else lo[:units],
         hi[:units], inc) for lo, hi, inc in ranges[:n_ranges]]
    fires = firing_pairs(acts, ranges, valid)[1]
    weight = np.sum(fires, axis=(0, 2))  # per image, its (pair, range)s as count_ranges sees
    assert (weight >= column_kernels.RUNS_MIN).any() == (units == 4)
    args = (acts, ranges, set_ids, 30, valid)
    fast = _masks(monkeypatch, "numba", *args)
    same(fast, _masks(monkeypatch, "numpy", *args))
    dense_check(fast, acts, ranges, set_ids, valid, 30)
