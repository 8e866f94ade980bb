"""Thresholds are the exact per-unit quantile."""

from __future__ import annotations

import numpy as np
import pytest

from ray_dissect.units.thresholds import device_thresholds, unit_thresholds


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


def _awkward(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n, k, 2, 3) float32: normal values, post-ReLU zeros, ties, -inf/inf/NaN, a unit of
    only non-finite values and a unit of one finite value."""
    acts = rng.normal(size=(n, k, 2, 3)).astype(np.float32)
    acts[:, 1] = np.maximum(acts[:, 1], 0)  # mostly exact zeros and ties
    acts[:, 2] = np.round(acts[:, 2] * 2) / 2  # many ties
    acts[0, 3, 0, 0], acts[-1, 3, 0, 1], acts[0, 3, 1, 2] = -np.inf, np.inf, np.nan
    acts[:, 4] = np.nan
    acts[:, 5] = np.inf
    acts[0, 5, 0, 0] = 1.5
    return acts


@pytest.mark.parametrize("quantile", [0.005, 0.01, 0.1, 0.2, 1 / 3, 0.5, 0.75, 0.999])
def test_the_device_path_is_bit_identical_to_numpy(quantile: float) -> None:
    """The torch path (run here with device="cpu", as a GPU actor runs it) gives the numpy
    reference's thresholds bit for bit, on ties, zeros, non-finite values, an empty unit and a
    one-value unit, for sizes that put numpy's virtual index on and between values."""
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 7, 50, 333):
        acts = _awkward(rng, n, 6)
        want, want_nonfinite = unit_thresholds(acts, quantile)
        got, nonfinite = device_thresholds(acts, quantile, "cpu")
        assert got.dtype == np.float64 and nonfinite.dtype == np.int64
        np.testing.assert_array_equal(got.view(np.int64)[~np.isnan(want)],
                                      want.view(np.int64)[~np.isnan(want)])
        assert np.isnan(got).tolist() == np.isnan(want).tolist()
        assert nonfinite.tolist() == want_nonfinite.tolist()


def test_the_device_path_agrees_on_many_random_sizes() -> None:
    """Thousands of (size, quantile) pairs, one unit each: identical to np.quantile."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        n, quantile = int(rng.integers(1, 60)), float(rng.uniform(0.0005, 0.9995))
        acts = rng.normal(size=(n, 1, 1, 1)).astype(np.float32)
        want = np.quantile(acts.astype(np.float64).ravel(), 1.0 - quantile)
        assert device_thresholds(acts, quantile, "cpu")[0][0] == want, (n, quantile)
