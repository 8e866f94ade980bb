"""Unit-mask signatures equal dense upsampled masks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ray_dissect.concepts.masks import UnitMask, unit_masks, upsample


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
    n = acts.shape[0]
    up = F.interpolate(torch.from_numpy(acts), size=shape, mode="bilinear",
                       align_corners=False).numpy()
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
