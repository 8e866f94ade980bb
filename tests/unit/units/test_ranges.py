"""Activation ranges by 1-D k-means: hand-computed ranges on tiny arrays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ray_dissect.units.ranges import kmeans_1d, unit_ranges


def _exhaustive(values: np.ndarray, k: int) -> list[tuple[float, float]]:
    """The global optimum: every split of the sorted values into k contiguous runs."""
    v = np.sort(values)
    best, best_cost = None, np.inf
    for cuts in itertools.combinations(range(1, len(v)), k - 1):
        runs = np.split(v, cuts)
        cost = sum(float(((r - r.mean()) ** 2).sum()) for r in runs)
        if cost < best_cost - 1e-12:
            best, best_cost = [(float(r[0]), float(r[-1])) for r in runs], cost
    assert best is not None
    return best


def test_three_separated_groups_give_their_ranges() -> None:
    """Three obvious groups come back as their [min, max], ascending."""
    values = np.array([9.0, 1.1, 5.2, 1.0, 5.0])
    assert kmeans_1d(values, 3) == [(1.0, 1.1), (5.0, 5.2), (9.0, 9.0)]


def test_an_outlier_takes_a_cluster_of_its_own() -> None:
    """Centres 1.5 and 10 put the boundary at 5.75: {0, 1, 2, 3} and {10}."""
    assert kmeans_1d(np.array([0.0, 1.0, 2.0, 3.0, 10.0]), 2) == [(0.0, 3.0), (10.0, 10.0)]


def test_fewer_distinct_values_than_clusters_give_fewer_ranges() -> None:
    """Two distinct values can only make two ranges, whatever k."""
    assert kmeans_1d(np.array([2.0, 7.0, 2.0, 7.0, 2.0]), 5) == [(2.0, 2.0), (7.0, 7.0)]


def test_empty_input_has_no_ranges() -> None:
    """No values, no ranges."""
    assert kmeans_1d(np.zeros(0), 3) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_exhaustive_optimum_on_small_arrays(seed: int) -> None:
    """On 12 values in 3 loose groups the result is the least-inertia contiguous split."""
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(c, 0.6, 4) for c in (0.0, 4.0, 9.0)])
    assert kmeans_1d(values, 3, seed=seed) == _exhaustive(values, 3)


def test_ranges_are_sorted_disjoint_and_cover_every_value() -> None:
    """Ranges ascend, do not overlap, and every value falls in exactly one."""
    values = np.random.default_rng(5).gamma(2.0, 1.0, 500)
    ranges = kmeans_1d(values, 5, seed=3)
    assert len(ranges) == 5
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
    inside = sum(((values >= lo) & (values <= hi)).astype(int) for lo, hi in ranges)
    assert np.array_equal(inside, np.ones_like(inside))


def test_same_seed_same_ranges() -> None:
    """The initialisation is seeded: a rerun gives identical ranges."""
    values = np.random.default_rng(9).normal(0.0, 1.0, 300)
    assert kmeans_1d(values, 4, seed=7) == kmeans_1d(values, 4, seed=7)


def test_unit_ranges_drop_zeros_of_nonnegative_units_and_nonfinite_values() -> None:
    """A post-ReLU unit loses its exact zeros; a unit with negatives keeps them; NaN goes."""
    acts = np.array([[[[0.0, 1.0]], [[-1.0, 0.0]]],
                     [[[0.0, 1.2]], [[np.nan, 3.0]]]], dtype=np.float32)  # (2, 2, 1, 2)
    got = unit_ranges(acts, 2)
    assert got[0] == [(1.0, 1.0), (pytest.approx(1.2), pytest.approx(1.2))]
    assert got[1] == [(-1.0, 0.0), (3.0, 3.0)]
