"""Unit-mask signatures equal dense upsampled masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.dense_masks import dense_signature

from ray_dissect.concepts.kernels import HAVE_NUMBA, KERNEL_ENV
from ray_dissect.concepts.masks import (
    UnitMask,
    range_masks,
    signature_bound,
    unit_masks,
    upsample,
)


@pytest.fixture(autouse=True, params=["numpy", "numba"] if HAVE_NUMBA else ["numpy"])
def kernels(request, monkeypatch) -> str:
    """Every test runs with the numpy reference and with the compiled kernels."""
    monkeypatch.setenv(KERNEL_ENV, request.param)
    return str(request.param)


def test_upsample_is_torch_bilinear_half_pixel() -> None:
    """Upsampling is F.interpolate(bilinear, align_corners=False); same size is identity."""
    maps = np.random.default_rng(1).random((3, 7, 7)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(maps)[:, None], size=(112, 112), mode="bilinear",
                         align_corners=False)[:, 0].numpy()
    np.testing.assert_array_equal(upsample(maps, (112, 112)), want)
    assert upsample(maps, (7, 7)) is maps


def test_signatures_match_dense_masks() -> None:
    """Per (image, set) counts equal a dense lo < up < hi mask counted per set id."""
    rng = np.random.default_rng(2)
    n, k, shape = 9, 3, (8, 8)
    acts = rng.normal(size=(n, k, 4, 4)).astype(np.float32)
    set_ids = rng.integers(0, 5, size=(n, *shape)).astype(np.int64)
    lo = np.array([0.5, 1.0, -np.inf])
    hi = np.array([np.inf, 1.5, 0.0])
    valid = np.ones(n, bool)
    valid[4] = False
    masks = unit_masks(acts, lo, hi, set_ids, first_image=100, valid=valid)
    _check(masks, acts, lo, hi, set_ids, valid, shape, inclusive=False)
    # Inclusive bounds taken at values that occur exactly (no upsampling: same size).
    same = acts[:, :, :2, :2].repeat(4, axis=2).repeat(4, axis=3)
    lo2 = np.array([same[0, 0, 0, 0], same[1, 1, 0, 0], -np.inf])
    hi2 = np.array([np.inf, same[2, 1, 0, 0] + 1, same[3, 2, 0, 0]])
    inc = unit_masks(same, lo2, hi2, set_ids, first_image=100, valid=valid, inclusive=True)
    _check(inc, same, lo2, hi2, set_ids, valid, shape, inclusive=True)
    assert inc[0].area > 0


def _check(masks, acts, lo, hi, set_ids, valid, shape, inclusive) -> None:
    n, k = acts.shape[:2]
    flat = torch.from_numpy(acts.reshape(n * k, 1, *acts.shape[2:]))  # per map, as the library
    up = F.interpolate(flat, size=shape, mode="bilinear", align_corners=False).numpy()
    up = up.reshape(n, k, *shape)
    for u, mask in enumerate(masks):
        inside = ((up[:, u] >= lo[u]) & (up[:, u] <= hi[u])) if inclusive else (
            (up[:, u] > lo[u]) & (up[:, u] < hi[u]))
        dense = inside & valid[:, None, None]
        want = np.zeros((n, 5), np.int64)
        for i in range(n):
            want[i] = np.bincount(set_ids[i][dense[i]], minlength=5)
        got = np.zeros((n, 5), np.int64)
        np.add.at(got, (mask.images - 100, mask.sets), mask.counts)
        np.testing.assert_array_equal(got, want)
        assert mask.area == dense.sum()


def test_concat_of_nothing_is_empty() -> None:
    """An empty signature has area 0."""
    assert UnitMask.concat([]).area == 0


def _as_dense(mask, n, n_sets, first):
    got = np.zeros((n, n_sets), np.int64)
    np.add.at(got, (mask.images - first, mask.sets), mask.counts)
    return got


def _planted(seed: int, n: int, src: tuple[int, int], shape: tuple[int, int], k: int):
    """Label sets as blobs and k units planted on them: pooled set indicators plus noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, size=(n, 4, 4))
    set_ids = np.kron(coarse, np.ones((shape[0] // 4 + 1, shape[1] // 4 + 1), np.int64))
    set_ids = set_ids[:, :shape[0], :shape[1]] * 3 + rng.integers(0, 3, size=(n, *shape))
    acts = np.zeros((n, k, *src), np.float32)
    for u in range(k):
        hit = torch.from_numpy((set_ids // 3 == u % 6).astype(np.float32)[:, None])
        acts[:, u] = F.adaptive_avg_pool2d(hit, src)[:, 0].numpy() * rng.uniform(1, 3)
    acts += rng.normal(0, 0.2, size=acts.shape).astype(np.float32)
    return np.maximum(acts, 0) if seed % 2 else acts, set_ids


@pytest.mark.parametrize(("seed", "src", "shape"), [(0, (7, 7), (112, 112)),
                                                   (1, (6, 5), (113, 47)),
                                                   (2, (7, 7), (7, 7)),
                                                   (3, (9, 8), (5, 6)),
                                                   (4, (5, 3), (131, 9))])
def test_range_masks_equal_dense_torch_masks_of_planted_units(seed, src, shape) -> None:
    """Every range's signatures equal counts of the dense torch-upsampled mask, for quantile,
    k-means-like (strict and inclusive) and per-image bounds, at several scales (masks of
    128 rows or more keep 16-bit running change counts)."""
    n, k = 12, 4
    acts, set_ids = _planted(seed, n, src, shape, k)
    valid = np.ones(n, bool)
    valid[3] = False
    flat = acts.transpose(1, 0, 2, 3).reshape(k, -1)
    q = np.quantile(flat, [0.3, 0.6, 0.9], axis=1)  # (3, k)
    per_image = np.broadcast_to(q[1], (n, k)) + np.linspace(-0.1, 0.1, n)[:, None]
    ranges = [(q[2], np.full(k, np.inf), False), (q[0], q[1], False), (q[0], q[1], True),
              (q[1], q[2], True), (per_image, np.full((n, k), np.inf), False)]
    got = range_masks(acts, ranges, set_ids, 50, valid)
    for r, (lo, hi, inc) in enumerate(ranges):
        want = dense_signature(acts, lo, hi, inc, set_ids, valid, 18)
        for u in range(k):
            np.testing.assert_array_equal(_as_dense(got[r][u], n, 18, 50), want[u])
            assert np.all(np.diff(got[r][u].images * 100 + got[r][u].sets) > 0)  # sorted


def test_pixels_exactly_on_a_bound_follow_torch() -> None:
    """Maps equal to the bound everywhere (every pixel ambiguous) are decided by torch's own
    values: all in for inclusive bounds, none for strict ones; zero maps are exact."""
    n, k = 3, 3
    acts = np.full((n, k, 7, 7), 0.7, np.float32)
    acts[:, 2] = 0.0
    lo = np.array([0.7, np.float32(0.7), 0.0])
    set_ids = np.random.default_rng(0).integers(0, 4, size=(n, 40, 40))
    valid = np.ones(n, bool)
    for inc in (False, True):
        got = range_masks(acts, [(lo, np.full(k, 0.7 if inc else np.inf), inc)], set_ids, 0,
                          valid)[0]
        want = dense_signature(acts, lo, np.full(k, 0.7 if inc else np.inf), inc, set_ids,
                                valid, 4)
        for u in range(k):
            np.testing.assert_array_equal(_as_dense(got[u], n, 4, 0), want[u])
    assert range_masks(acts, [(lo, np.full(k, np.inf), True)], set_ids, 0, valid)[0][2].area \
        == n * 1600


def test_non_finite_maps_are_masked_as_torch_does() -> None:
    """A map with inf values gives the mask of torch's upsampling of it; one with NaN is
    skipped (its peak is NaN)."""
    n, k = 4, 2
    rng = np.random.default_rng(5)
    acts = rng.normal(size=(n, k, 5, 5)).astype(np.float32)
    acts[0, 0, 2, 2] = np.nan
    acts[1, 1, 0, 4] = np.inf
    set_ids = rng.integers(0, 3, size=(n, 30, 30))
    lo, hi, valid = np.array([0.2, 0.5]), np.array([np.inf, np.inf]), np.ones(n, bool)
    got = range_masks(acts, [(lo, hi, False)], set_ids, 0, valid)[0]
    want = dense_signature(acts, lo, hi, False, set_ids, valid, 3)
    for u in range(k):
        np.testing.assert_array_equal(_as_dense(got[u], n, 3, 0), want[u])
    assert got[1].images.tolist().count(1) > 0 and 0 not in got[0].images.tolist()


def test_range_masks_match_one_unit_masks_call_per_range() -> None:
    """Counting ranges together gives what separate unit_masks calls give, array for array."""
    acts, set_ids = _planted(7, 10, (7, 7), (56, 56), 3)
    lo, hi = np.array([0.1, 0.2, 0.3]), np.array([0.8, np.inf, 1.5])
    valid = np.ones(10, bool)
    together = range_masks(acts, [(lo, hi, False), (hi * 0.5, hi, True)], set_ids, 0, valid)
    for r, (a, b, inc) in enumerate([(lo, hi, False), (hi * 0.5, hi, True)]):
        alone = unit_masks(acts, a, b, set_ids, 0, valid, inc)
        for x, y in zip(together[r], alone, strict=True):
            for f in ("images", "sets", "counts"):
                np.testing.assert_array_equal(getattr(x, f), getattr(y, f))


def _set_sizes(set_ids: np.ndarray) -> np.ndarray:
    return np.array([len(np.unique(ids)) for ids in set_ids], dtype=np.int64)


def test_signature_bound_holds_for_every_unit_and_is_exact_for_the_whole_line() -> None:
    """The bound is at least each unit's entries over all ranges (quantile, k-means-like,
    inclusive, per-image, with an invalid image); for the range (-inf, inf) every pixel is in,
    so a unit's entries are its images' label sets: the bound is met exactly."""
    n, k = 12, 4
    acts, set_ids = _planted(3, n, (7, 7), (56, 56), k)
    valid = np.ones(n, bool)
    valid[5] = False
    flat = acts.transpose(1, 0, 2, 3).reshape(k, -1)
    q = np.quantile(flat, [0.3, 0.6, 0.99], axis=1)
    per_image = np.broadcast_to(q[1], (n, k)) + np.linspace(-0.1, 0.1, n)[:, None]
    ranges = [(q[2], np.full(k, np.inf), False), (q[0], q[1], False), (q[1], q[2], True),
              (per_image, np.full((n, k), np.inf), False)]
    sizes = _set_sizes(set_ids)
    bound = signature_bound(acts, ranges, valid, sizes)
    entries = sum(np.array([len(m.counts) for m in per])
                  for per in range_masks(acts, ranges, set_ids, 0, valid))
    assert np.all(bound >= entries) and np.all(entries > 0)
    assert np.all(bound < len(ranges) * sizes[valid].sum())  # the peaks do exclude pairs
    line = [(np.full(k, -np.inf), np.full(k, np.inf), False)]
    whole = range_masks(acts, line, set_ids, 0, valid)[0]
    np.testing.assert_array_equal(signature_bound(acts, line, valid, sizes),
                                  [len(m.counts) for m in whole])
    assert all(len(m.counts) == sizes[valid].sum() for m in whole)
