"""The compiled kernels equal the numpy reference and dense torch masks, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.kernel_maps import dense_check, same, tricky, upsampled

from ray_dissect.concepts import kernels
from ray_dissect.concepts.masks import UnitMask, range_masks
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
