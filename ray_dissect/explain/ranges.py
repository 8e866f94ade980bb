"""Activation ranges of units and the explanation of one range.

Every unit is scored on its quantile mask (activation above the threshold); clustered jobs
also explain each activation range [lo, hi] found by 1-D k-means
(:mod:`ray_dissect.units.ranges`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.formula import evaluate
from ray_dissect.explain.metrics import ExplanationMetrics, explanation_metrics
from ray_dissect.explain.optimal import Budget, Certificate, optimal_search, space_bound
from ray_dissect.explain.search import (
    Scored,
    SearchParams,
    SearchResult,
    SearchSpace,
    Selector,
    beam_search,
)


@dataclass(frozen=True)
class RangeSpec:
    """One mask per unit: ``lo < a < hi`` (or ``<=`` when inclusive); (k,) float64 bounds."""

    lo: np.ndarray
    hi: np.ndarray
    inclusive: bool


@dataclass(frozen=True)
class RangeExplanation:
    """The explanation of one activation range of one unit."""

    lo: float
    hi: float
    inclusive: bool
    mask_pixels: int
    result: SearchResult
    metrics: ExplanationMetrics | None
    best: Scored | None = None
    certificate: Certificate | None = None


def range_specs(thresholds: np.ndarray, ranges: np.ndarray, inclusive: bool) -> list[RangeSpec]:
    """The quantile range (threshold, +inf) first, then each k-means range of a block of units.

    Args:
        thresholds: (k,) float64 per-unit thresholds (NaN: the unit has no finite value).
        ranges: (k, clusters, 2) float64 [lo, hi] per range, NaN where a unit has fewer.
        inclusive: whether the k-means ranges include their bounds.
    """
    lo = np.where(np.isfinite(thresholds), thresholds, np.inf)
    specs = [RangeSpec(lo, np.full_like(lo, np.inf), inclusive=False)]
    for r in range(ranges.shape[1]):
        lo_r = np.where(np.isnan(ranges[:, r, 0]), np.inf, ranges[:, r, 0])
        hi_r = np.where(np.isnan(ranges[:, r, 1]), -np.inf, ranges[:, r, 1])
        specs.append(RangeSpec(lo_r, hi_r, inclusive))
    return specs


def per_image_ranges(acts: np.ndarray, q: float) -> RangeSpec:
    """inner-detectors' rule: (t, inf) with t the 1 - q quantile of each image's own map.

    Args:
        acts: (N, k, h, w) float32. Returns bounds of shape (N, k).
    """
    n, k = acts.shape[:2]
    t = np.quantile(acts.reshape(n, k, -1).astype(np.float64), 1.0 - q, axis=2)
    return RangeSpec(t, np.full_like(t, np.inf), inclusive=False)


def searched_ranges(specs: list[RangeSpec], u: int) -> list[int]:
    """Indices into ``specs`` of unit ``u``'s explained ranges, in explanation order: the
    k-means ranges the unit has (all but the quantile range), or the quantile range alone."""
    searched = range(1, len(specs)) if len(specs) > 1 else range(1)
    return [r for r in searched if np.isfinite(specs[r].lo[u])]


def explain_range(mask: UnitMask, rng: RangeSpec, u: int, space: SearchSpace,
                  params: SearchParams, pruner: Selector | None, search: str = "beam",
                  budget: Budget | None = None) -> RangeExplanation:
    """Search the formula of unit ``u``'s mask in range ``rng``, with its metrics and
    certificate: the beam's answer (bounded by the root bound), or with ``search: optimal``
    the branch and bound's, started from the beam's."""
    result = beam_search(mask, space, params, pruner)
    start = result.beam[0] if result.beam else None
    if search == "optimal":
        found = optimal_search(mask, space, params, start, budget)
        best, cert = found.best, found.certificate
    else:
        best, cert = start, space_bound(mask, space, params, start)
        cert = Certificate(cert.search, cert.optimal, cert.upper_bound, result.visited)
    metrics = None
    if best is not None:
        metrics = explanation_metrics(mask, evaluate(best.formula, space.leaf), space)
    return RangeExplanation(float(rng.lo[u]), float(rng.hi[u]), rng.inclusive, mask.area,
                            result, metrics, best, cert)
