"""Sub-specs of the studies that test what labels claim."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ray_dissect.spec.base import ADDED_LATER, UNIQUE, Frozen

CCE_QUANTILES = (0.005, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 0.9, 0.95, 0.99, 0.995)


class ThresholdSweepSpec(Frozen):
    """Labels (and, for compositional jobs, formulas) at several activation thresholds.

    For each ``q`` in ``quantiles`` (CCE's ``compare_thresholds`` list by default) every unit
    gets the exact per-unit quantile ``T_q`` of its activations: ``q <= 0.5`` scores the high
    tail (T_q of 1 - q, range (T_q, inf): the top q of the activations), ``q > 0.5`` the low
    tail (range (0, T_q), or (-inf, T_q) for a unit with negative values). ``zeros: keep``
    (default) counts exact zeros in the quantile as the job's own thresholds do, so the
    sweep's point at q equals a job with ``quantile: q``; ``zeros: drop`` leaves the exact
    zeros of non-negative units out first, CCE's ``compare_thresholds`` convention (on
    post-ReLU maps that are mostly zeros the two differ: at q = 0.1 with 92 % zeros, keep
    gives T = 0, drop the 0.9 quantile of the non-zero values). Numpy's exact interpolated
    quantile, without CCE's index truncation. ``rule: per_image`` is inner-detectors' compat
    rule instead: the threshold of each image and unit is the 1 - q quantile of that image's
    map (q = 0.5: the per-image median), the mask is above it, and a concept's score is the
    mean over the images containing it of the per-image IoU.
    """

    quantiles: Annotated[tuple[Annotated[float, Field(gt=0, lt=1)], ...],
                         Field(min_length=1), UNIQUE] = CCE_QUANTILES
    """Quantiles to sweep (default: CCE's `compare_thresholds` list)."""
    rule: Literal["dataset", "per_image"] = "dataset"
    """`dataset`: one exact threshold per unit; `per_image`: each image's own 1 - q quantile
    (inner-detectors).
    """
    zeros: Annotated[Literal["keep", "drop"], ADDED_LATER] = "keep"
    """`keep`: exact zeros count in each quantile, as the job's own thresholds do; `drop`:
    the exact zeros of non-negative units are left out first (CCE's `compare_thresholds`).
    """


class RangesImportanceSpec(Frozen):
    """How much the model's decisions rest on each activation range (clustered jobs only).

    For each range index k (ranges sorted by lower bound, k = 0 the lowest) a forward hook on
    the layer zeroes every unit's activations inside its k-th range (the method's ``bounds``
    rule) and returns the modified tensor; the share of images whose argmax class changes is
    recorded, for all units at once and, with ``per_unit``, for each unit alone.
    """

    per_unit: bool = True
    """Also zero each unit's range alone (one row per unit), not only all at once."""


class UnitAblationSpec(Frozen):
    """Zero the units that share a label and measure the model's decisions.

    Each group of interpretable units with the same NetDissect label (per layer) is zeroed at
    once; with ``single_units`` every unit is also zeroed alone. Recorded: the drop in the
    probability of the class predicted without ablation and the share of argmax flips, over
    all images, over the images that contain the label's concept and over the others.
    """

    single_units: bool = False
    """Also zero every unit alone, not only label groups."""


class ConceptBlackoutSpec(Frozen):
    """inner-detectors' ``verify``: black out each annotated concept of each image.

    For every image (the first ``limit`` with one) and every concept annotated in its pixel
    layers, the copy with that concept's pixels set to 0 before normalisation; per (unit,
    concept) the relative change of the unit's mean activation, and per concept its Pearson
    correlation with the units' IoUs.
    """

    limit: Annotated[int | None, Field(gt=0)] = None
    """Only the first N images with a concept (default all)."""


class HeuristicsSpec(Frozen):
    """CCE's ``compare_heuristics``: the same beam searches with each IoU-bound heuristic.

    For every unit the job dissects (``units:``; CCE uses ``--random_units``) and every range
    the method explains, the beam search runs once per heuristic in ``heuristics``; recorded:
    the states visited (exact IoUs computed), the search's wall-clock seconds (on the task's
    CPU, so comparable within one job) and the best formula. Admissible bounds never change
    the best formula, which the rows let one check. Compositional and clustered methods only.
    """

    heuristics: Annotated[tuple[Literal["none", "areas", "cfh", "mmesh"], ...],
                          Field(min_length=1), UNIQUE] = ("none", "areas", "cfh", "mmesh")
    """The heuristics compared, each run on the same units and ranges."""


class StudiesSpec(Frozen):
    """The studies to run (each optional)."""

    threshold_sweep: ThresholdSweepSpec | None = None
    """Labels (and formulas) at several activation thresholds."""
    ranges_importance: Annotated[RangesImportanceSpec | None, ADDED_LATER] = None
    """Decision flips when each activation range is zeroed (clustered jobs, classifiers)."""
    unit_ablation: Annotated[UnitAblationSpec | None, ADDED_LATER] = None
    """Decision effects of zeroing units that share a label (classifiers)."""
    concept_blackout: Annotated[ConceptBlackoutSpec | None, ADDED_LATER] = None
    """Activation change when a concept's pixels are blacked out, against the units' IoUs."""
    heuristics: Annotated[HeuristicsSpec | None, ADDED_LATER] = None
    """Time and states visited per search heuristic on the same units (compositional and
    clustered jobs)."""
