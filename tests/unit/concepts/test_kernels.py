"""The compiled kernels equal the numpy reference and dense torch masks, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.dense_masks import dense_signature

from ray_dissect.concepts import kernels
from ray_dissect.concepts.masks import UnitMask, range_masks
from ray_dissect.concepts.tiles import Grid

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


def _masks(monkeypatch, which: str, *args) -> list[list[UnitMask]]:
    monkeypatch.setenv(kernels.KERNEL_ENV, which)
    assert kernels.kernel_name() == which
    return range_masks(*args)


def _same(a: list[list[UnitMask]], b: list[list[UnitMask]]) -> None:
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            for f in ("images", "sets", "counts"):
                got, want = getattr(x, f), getattr(y, f)
                assert got.dtype == want.dtype == np.int32
                np.testing.assert_array_equal(got, want)


def _dense_check(masks, acts, ranges, set_ids, valid, first) -> None:
    n_sets = int(set_ids.max()) + 1
    for r, (lo, hi, inc) in enumerate(ranges):
        want = dense_signature(acts, lo, hi, inc, set_ids, valid, n_sets)
        for u, mask in enumerate(masks[r]):
            got = np.zeros((len(acts), n_sets), np.int64)
            np.add.at(got, (mask.images - first, mask.sets), mask.counts)
            np.testing.assert_array_equal(got, want[u])


def _up(acts: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    n, k, h, w = acts.shape
    out = F.interpolate(torch.from_numpy(acts.reshape(n * k, 1, h, w)), size=shape,
                        mode="bilinear", align_corners=False)
    return out.numpy().reshape(n, k, *shape)


def _tricky(seed: int, src: tuple[int, int], shape: tuple[int, int]):
    """Smooth post-ReLU maps (zero cells, cells of one value), one inf and one NaN map, an
    all-zero map; blob label sets plus a noisy image of many sets (> SMALL_SETS); bounds on
    exact torch values (ties), one float64 ulp and one float32 ulp away (near-ties)."""
    rng = np.random.default_rng(seed)
    n, k = 10, 4
    acts = np.maximum(rng.normal(size=(n, k, *src)), 0).astype(np.float32)
    acts[2, 1] = 0.0
    acts[3, 2, :2, :2] = 0.75
    if src != shape:  # same size is no upsampling (library), but torch's makes inf * 0 NaN
        acts[4, 0, 1, 1] = np.inf
    acts[5, 3, 0, 0] = np.nan
    blobs = np.kron(rng.integers(0, 5, size=(n, 3, 3)),
                    np.ones((shape[0] // 3 + 1, shape[1] // 3 + 1), np.int64))
    set_ids = blobs[:, :shape[0], :shape[1]] * 40
    set_ids[6] = rng.integers(0, 200, size=shape)
    up = _up(acts, shape)
    tie = np.float64(up[1, :, shape[0] // 2, shape[1] // 3])  # values that occur exactly
    near = np.nextafter(tie, np.inf)
    near32 = np.nextafter(tie.astype(np.float32), np.float32(-np.inf)).astype(np.float64)
    q = np.nanquantile(np.where(np.isfinite(acts), acts, np.nan).transpose(1, 0, 2, 3)
                       .reshape(k, -1), [0.2, 0.5, 0.9], axis=1)
    inf = np.full(k, np.inf)
    ranges = [(q[2], inf, False), (tie, inf, False), (tie, inf, True), (near, q[2] + 1, False),
              (near32, tie, True), (np.zeros(k), q[0], False), (q[0], q[1], True),
              (-inf, np.zeros(k), True), (np.broadcast_to(q[1], (n, k))
                                          + np.linspace(-0.05, 0.05, n)[:, None], inf, False)]
    valid = np.ones(n, bool)
    valid[7] = False
    return acts, ranges, set_ids, valid


@pytest.mark.parametrize(("seed", "src", "shape"), [(0, (7, 7), (112, 112)),
                                                   (1, (6, 5), (113, 47)),
                                                   (2, (4, 4), (4, 4)),
                                                   (3, (9, 8), (5, 6))])
def test_numba_masks_equal_numpy_and_dense_torch_masks(monkeypatch, seed, src, shape) -> None:
    """Ties, near-ties, non-finite maps, zero maps, inclusive and per-image bounds: the numba
    signatures equal the numpy tile walk's array for array and the dense torch masks."""
    acts, ranges, set_ids, valid = _tricky(seed, src, shape)
    args = (acts, ranges, set_ids, 30, valid)
    fast = _masks(monkeypatch, "numba", *args)
    _same(fast, _masks(monkeypatch, "numpy", *args))
    _dense_check(fast, acts, ranges, set_ids, valid, 30)


def test_near_ties_and_non_finite_maps_go_through_torch() -> None:
    """The kernel leaves undecided exactly the (pair, range)s it must: the inf map in every
    range it fires for, and the ranges whose bound is a pixel's own value."""


    acts, ranges, set_ids, _ = _tricky(0, (7, 7), (112, 112))
    n, k = acts.shape[:2]
    bounds = [(np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k)), inc)
              for lo, hi, inc in ranges]
    images, units = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(k), indexing="ij"))
    fires = [np.ones(n * k, bool) for _ in bounds]
    found = kernels.count_ranges(acts, images, units, bounds, fires,
                                 Grid.make((7, 7), (112, 112)), set_ids)
    inf_pair = 4 * k + 0
    assert found.redo[inf_pair].all()
    ties = (images == 1)
    assert found.redo[ties, 1].all() and found.redo[ties, 2].all()  # bound = a pixel's value
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
