"""Consolidation of discrepancy maps: Zhou's re-centre-and-average, the seed's chain, size."""

from __future__ import annotations

import numpy as np
import pytest

from ray_dissect.errors import SpecError
from ray_dissect.visualize.rf_consolidation import (
    RFAccumulator,
    consolidate,
    rf_size,
    seed_chain,
)


def test_zhou_consolidation_recentres_and_averages() -> None:
    """Two delta maps re-centred on their given centres average at (H // 2, W // 2); shard merge
    through a state_dict round trip equals one pass."""
    maps = np.zeros((1, 2, 16, 16), dtype=np.float32)
    maps[0, 0, 3, 5] = 2.0
    maps[0, 1, 10, 1] = 4.0
    centres = np.array([[[3.0, 5.0], [10.0, 1.0]]])
    rf = consolidate(maps, centres)
    assert rf.shape == (1, 16, 16) and rf[0, 8, 8] == 3.0 and rf.sum() == 3.0
    a, b = RFAccumulator(1, 16, 16), RFAccumulator(1, 16, 16)
    a.add(maps[:, 0], centres[:, 0])
    b.add(maps[:, 1], centres[:, 1], units=[0])
    merged = RFAccumulator.from_state(a.state_dict())
    merged.merge(RFAccumulator.from_state(b.state_dict()))
    np.testing.assert_array_equal(merged.result(), rf)
    np.testing.assert_array_equal(consolidate(maps)[0], rf[0])  # peaks are the deltas


def test_seed_chain_on_hand_example() -> None:
    """The seed's chain keeps the peak's blob strictly inside its contour and centres its box."""
    d = np.zeros((32, 32))
    d[4:11, 6:13] = 5.0  # grey 75, holds the peak (first argmax at (4, 6))
    d[20:25, 20:25] = 3.0  # grey 45, another blob: dropped
    d[27, 27] = 1.0  # grey 15 < 25: below threshold
    out = seed_chain(d)
    expected = np.zeros((32, 32))
    expected[14:18, 14:18] = 75.0  # inside 5 x 5 -> box rows 5..9, L = 4, corner int(16 - 2)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    rf = consolidate(d[None, None], compat=True)[0]
    np.testing.assert_allclose(rf, expected / 75.0, atol=1e-6)


def test_rf_size_on_hand_example() -> None:
    """Area at >= half maximum, side sqrt(area), centroid offset from (H // 2, W // 2)."""
    rf = np.full((20, 20), 0.49)
    rf[2:6, 10:16] = 1.0
    rf[15, 0] = 0.5
    size = rf_size(rf)
    assert size.area == 25 and size.side == 5.0
    assert size.offset == pytest.approx((99 / 25 - 10, 300 / 25 - 10))
    assert rf_size(np.zeros((4, 4))).side == 0.0


def test_add_units_equals_add_with_the_whole_layer() -> None:
    """Maps of only the listed units (one unit twice, from two images) accumulate as whole-layer
    maps restricted to those units do, for Zhou's and the seed's consolidation."""
    rng = np.random.default_rng(4)
    maps = rng.random((2, 3, 12, 12)) * 4  # two images x three units
    centres = rng.random((2, 3, 2)) * 12
    for compat in (False, True):
        whole, rows = RFAccumulator(3, 12, 12, compat=compat), RFAccumulator(3, 12, 12,
                                                                             compat=compat)
        whole.add(maps[0], centres[0], units=[2, 0])
        whole.add(maps[1], centres[1], units=[2])
        rows.add_units([2, 0, 2], np.stack([maps[0, 2], maps[0, 0], maps[1, 2]]),
                       np.stack([centres[0, 2], centres[0, 0], centres[1, 2]]))
        np.testing.assert_array_equal(rows.sums, whole.sums)
        assert rows.counts.tolist() == [1, 0, 2]
    rows.add_units([], np.zeros((0, 12, 12)))
    with pytest.raises(SpecError):
        rows.add_units([1], maps[0])
