"""Metrics of an explanation (CCE's set, dataset-wide, over valid images).

For a unit mask B and an explanation's mask L (both over all pixels of all images):

- IoU = |B and L| / |B or L|;
- activation coverage = |B and L| / |B|;
- detection accuracy (pixel level) = |B and L| / |L|;
- samples coverage = #{x : |B_x and L_x| > 0} / #{x : |L_x| > 0}, which is also the original,
  image-level detection accuracy of detacc-compexp;
- explanation coverage = #{x : |B_x and L_x| > 0} / #{x : |B_x| > 0}.

A ratio whose denominator is 0 is 0. All of them come from the unit mask's signature and the
formula evaluated once per label set, so no pixel is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.search import SearchSpace


@dataclass(frozen=True)
class ExplanationMetrics:
    """The metrics of one explanation (floats in [0, 1])."""

    iou: float
    activation_coverage: float
    detection_accuracy: float
    samples_coverage: float
    explanation_coverage: float


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def explanation_metrics(mask: UnitMask, f: np.ndarray, space: SearchSpace) -> ExplanationMetrics:
    """Metrics of a formula given as ``f``, (n_sets,) bool, against one unit mask."""
    hit = f[mask.sets]
    inter = float(mask.counts[hit].sum())
    area_b = float(mask.area)
    area_l = float(space.set_counts @ f)
    in_l = f[space.entry_sets] & space.entry_valid
    images_l = np.unique(space.image_of_entry[in_l]).size
    images_both = np.unique(mask.images[hit]).size
    images_b = np.unique(mask.images).size
    return ExplanationMetrics(
        iou=_ratio(inter, area_b + area_l - inter),
        activation_coverage=_ratio(inter, area_b),
        detection_accuracy=_ratio(inter, area_l),
        samples_coverage=_ratio(images_both, images_l),
        explanation_coverage=_ratio(images_both, images_b))
