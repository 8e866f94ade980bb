"""Thresholds are the exact per-unit quantile."""

from __future__ import annotations

import numpy as np

from ray_dissect.units.thresholds import unit_thresholds


def test_matches_numpy_percentile_per_unit() -> None:
    """Equal to np.percentile over all N*h*w values of each unit (NetDissect-Lite's exact path)."""
    acts = np.random.default_rng(0).normal(size=(50, 4, 3, 3)).astype(np.float32)
    got, nonfinite = unit_thresholds(acts, 0.005)
    want = np.percentile(acts.astype(np.float64), 99.5, axis=(0, 2, 3))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert nonfinite.tolist() == [0, 0, 0, 0]


def test_hand_computed_value() -> None:
    """0.9 quantile of 0..9 is 8.1 (linear interpolation)."""
    acts = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    assert unit_thresholds(acts, 0.1)[0][0] == 8.1


def test_nonfinite_values_are_counted_and_left_out() -> None:
    """NaN/inf do not poison the threshold; a unit with no finite value gets NaN."""
    acts = np.arange(20, dtype=np.float32).reshape(10, 2, 1, 1)
    acts[0, 0] = np.nan
    acts[1, 0] = np.inf
    acts[:, 1] = np.nan
    got, nonfinite = unit_thresholds(acts, 0.5)
    assert nonfinite.tolist() == [2, 10]
    assert got[0] == np.quantile(acts[2:, 0].ravel().astype(np.float64), 0.5)
    assert np.isnan(got[1])
