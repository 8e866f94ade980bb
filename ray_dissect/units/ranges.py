"""Activation ranges of a unit, by 1-D k-means (Clustered Compositional Explanations).

A unit's N x h x w activations (exact zeros dropped when every value is >= 0, as CCE does for
post-ReLU maps) are clustered into K groups by 1-D k-means; each group gives the range
[min, max] of its members, sorted by lower bound (range 0 is the lowest). With K = 1 the
caller uses the quantile threshold instead (NetDissect / Compositional Explanations mode).

1-D k-means is solved on the sorted values: a cluster is then a contiguous run, so one Lloyd
step is a binary search of the k - 1 midpoints plus prefix sums, O(k log n) after one sort.
Initialisation is k-means++ with ``np.random.default_rng(seed)``, best of ``n_init`` runs by
inertia (as scikit-learn's defaults of CCE's era), so the result is deterministic per seed.
"""

from __future__ import annotations

import itertools

import numpy as np

MAX_ITER = 300


def _lloyd(sorted_vals: np.ndarray, prefix: np.ndarray, prefix_sq: np.ndarray,
           centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations on sorted data; returns (centers, cut indices, inertia)."""
    n = len(sorted_vals)
    for _ in range(MAX_ITER):
        centers = np.sort(centers)
        mids = (centers[1:] + centers[:-1]) / 2
        cuts = np.concatenate([[0], np.searchsorted(sorted_vals, mids, side="right"), [n]])
        sizes = np.diff(cuts)
        sums = prefix[cuts[1:]] - prefix[cuts[:-1]]
        new = np.where(sizes > 0, sums / np.maximum(sizes, 1), centers)
        if np.array_equal(new, centers):
            break
        centers = new
    sq = prefix_sq[cuts[1:]] - prefix_sq[cuts[:-1]]
    sums = prefix[cuts[1:]] - prefix[cuts[:-1]]
    inertia = float(np.sum(sq - 2 * centers * sums + sizes * centers**2))
    return centers, cuts, inertia


def _kmeans_pp(values: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on (a sample of) the values."""
    centers = [values[rng.integers(len(values))]]
    dist = (values - centers[0]) ** 2
    for _ in range(1, k):
        total = dist.sum()
        pick = rng.integers(len(values)) if total <= 0 else rng.choice(len(values), p=dist / total)
        centers.append(values[pick])
        dist = np.minimum(dist, (values - values[pick]) ** 2)
    return np.asarray(centers, dtype=np.float64)


def kmeans_1d(values: np.ndarray, k: int, seed: int = 0, n_init: int = 10
              ) -> list[tuple[float, float]]:
    """Cluster 1-D values into (at most) k groups; return each group's [min, max], ascending.

    Args:
        values: (n,) finite float values.
        k: number of clusters; fewer ranges come back when there are fewer distinct values.
        seed: seed of the k-means++ initialisation.
        n_init: runs; the lowest inertia wins (ties: the earliest run).

    Returns:
        [(lo, hi), ...] sorted by lo, non-overlapping.

    Examples:
        >>> kmeans_1d(np.array([1.0, 1.1, 5.0, 5.2, 9.0]), 3)
        [(1.0, 1.1), (5.0, 5.2), (9.0, 9.0)]
    """
    sorted_vals = np.sort(np.asarray(values, dtype=np.float64))
    if len(sorted_vals) == 0:
        return []
    distinct = np.unique(sorted_vals)
    k = min(k, len(distinct))
    prefix = np.concatenate([[0.0], np.cumsum(sorted_vals)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(sorted_vals**2)])
    rng = np.random.default_rng(seed)
    sample = sorted_vals if len(sorted_vals) <= 100_000 else rng.choice(sorted_vals, 100_000)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(n_init):
        _, cuts, inertia = _lloyd(sorted_vals, prefix, prefix_sq, _kmeans_pp(sample, k, rng))
        if best is None or inertia < best[0]:
            best = (inertia, cuts)
    assert best is not None
    cuts = best[1]
    return [(float(sorted_vals[a]), float(sorted_vals[b - 1]))
            for a, b in itertools.pairwise(cuts) if b > a]


def unit_ranges(acts: np.ndarray, k: int, seed: int = 0) -> list[list[tuple[float, float]]]:
    """Activation ranges of each unit.

    Args:
        acts: (N, units, h, w) float32 activations over the valid images.
        k: clusters per unit.

    Returns:
        per unit, its ranges [(lo, hi), ...] ascending (non-finite values left out; exact zeros
        left out when all values are >= 0).
    """
    out = []
    for unit in range(acts.shape[1]):
        values = acts[:, unit].reshape(-1)
        values = values[np.isfinite(values)]
        if values.size and values.min() >= 0:
            values = values[values != 0]
        out.append(kmeans_1d(values, k, seed))
    return out
