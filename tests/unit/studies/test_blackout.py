"""Blackout copies, Delta and Pearson against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ray_dissect.studies.blackout import (
    BlackoutSums,
    copies,
    delta,
    pearson,
    upsample_nearest,
)


@pytest.mark.parametrize(("shape", "size"), [((4, 4), 8), ((3, 5), 7), ((112, 112), 224)])
def test_nearest_upsampling_is_torch_nearest(shape: tuple[int, int], size: int) -> None:
    """The mask at input resolution is F.interpolate(mode='nearest') of the mask."""
    mask = np.random.default_rng(0).random(shape) > 0.5
    want = F.interpolate(torch.from_numpy(mask[None, None].astype(np.float32)), size=(size, size),
                         mode="nearest")[0, 0].numpy() > 0
    assert (upsample_nearest(mask, size) == want).all()


def test_copies_black_out_each_concept_and_nothing_else() -> None:
    """The original first, then one copy per concept (ascending) black exactly on its mask."""
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    pixel = np.zeros((2, 2, 2), dtype=np.int32)
    pixel[0, 0, 0], pixel[1, 0, 0], pixel[1, 1, 1] = 7, 3, 7
    out = list(copies(image, pixel, 4))
    assert [c for c, _ in out] == [0, 3, 7]
    assert (out[0][1] == image).all()
    black3 = np.zeros((4, 4), dtype=bool)
    black3[:2, :2] = True
    black7 = black3.copy()
    black7[2:, 2:] = True
    for (_, img), black in zip(out[1:], (black3, black7), strict=True):
        assert (img[black] == 0).all() and (img[~black] == 200).all()


def test_sums_skip_non_finite_terms_and_merge_shards() -> None:
    """Delta = sum after / sum before - 1 per unit over the finite pairs, across shards."""
    a, b = BlackoutSums(2), BlackoutSums(2)
    a.add(5, np.array([2.0, np.nan]), np.array([1.0, 1.0]))
    b.add(5, np.array([2.0, 4.0]), np.array([3.0, np.inf]))
    b.add(6, np.array([1.0, 0.0]), np.array([1.0, 0.0]))
    total = BlackoutSums(2)
    total.merge(a.arrays())
    total.merge(b.arrays())
    arrays = total.arrays()
    assert arrays["concepts"].tolist() == [5, 6] and arrays["seen"].tolist() == [2, 1]
    assert arrays["images"].tolist() == [[2, 1], [0, 1]]
    d = delta(arrays["before"], arrays["after"])
    assert d[0, 0] == pytest.approx(4 / 4 - 1) and d[0, 1] == 0.0
    assert np.isnan(d[1, 0]) and np.isnan(d[1, 1])


def test_pearson_is_scipys_over_finite_pairs() -> None:
    """NaN pairs are left out; constant or single-pair inputs give no correlation."""
    x, y = np.array([0.1, 0.5, np.nan, 0.3, 0.9]), np.array([-0.2, -0.6, 0.0, -0.1, -0.95])
    r, p = pearson(x, y)
    ok = np.isfinite(x)
    want = stats.pearsonr(x[ok], y[ok])
    assert (r, p) == pytest.approx((want.statistic, want.pvalue))
    assert pearson(np.array([1.0, 1.0]), np.array([0.0, 1.0])) == (None, None)
    assert pearson(np.array([1.0]), np.array([0.0])) == (None, None)
