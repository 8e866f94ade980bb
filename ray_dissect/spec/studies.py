"""Sub-specs of the studies that test what labels claim."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ray_dissect.spec.base import UNIQUE, Frozen

CCE_QUANTILES = (0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995)


class ThresholdSweepSpec(Frozen):
    """Labels (and, for compositional jobs, formulas) at several activation thresholds.

    For each ``q`` in ``quantiles`` (CCE's ``compare_thresholds`` list by default) every unit
    gets the exact per-unit quantile ``T_q`` of its activations, exact zeros of non-negative
    units left out (as CCE): ``q <= 0.5`` scores the high tail (T_q of 1 - q, range
    (T_q, inf): the top q of the activations), ``q > 0.5`` the low tail (range (0, T_q): the
    lowest 1 - q of the non-zero activations). Numpy's exact interpolated quantile, without
    CCE's index truncation. ``rule: per_image`` is inner-detectors' compat rule instead: the
    threshold of each image and unit is the 1 - q quantile of that image's map (q = 0.5: the
    per-image median), the mask is above it, and a concept's score is the mean over the
    images containing it of the per-image IoU.
    """

    quantiles: Annotated[tuple[Annotated[float, Field(gt=0, lt=1)], ...],
                         Field(min_length=1), UNIQUE] = CCE_QUANTILES
    rule: Literal["dataset", "per_image"] = "dataset"


class StudiesSpec(Frozen):
    """The studies to run (each optional)."""

    threshold_sweep: ThresholdSweepSpec | None = None
