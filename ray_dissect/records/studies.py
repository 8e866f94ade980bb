"""Records of the studies, one JSON Lines file each under ``DIR/studies/`` (named for the
study), and the ``compare`` report (one JSON file)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ray_dissect.records.schema import SCHEMA_VERSION, ConceptScore, ReadableVersion, _Record


class Concept(_Record):
    """A concept of the dataset."""

    name: str
    number: Annotated[int, Field(ge=0, description="global label number in the dataset")]
    category: str = Field(description="primary category of the label")


class ThresholdSweepRow(_Record):
    """One row of ``studies/threshold_sweep.jsonl``.

    A unit row (``unit`` set) is a unit's labelling at one quantile; a layer row (``unit``
    null) holds ``category_shares``: the share of each category among that quantile's
    interpretable labels (IoU >= the job's iou_threshold), and, for compositional jobs,
    ``formula_category_shares``: the share of each category among the positive atoms of the
    units' best formulas at that quantile (CCE's ``compare_thresholds`` tally).
    """

    schema_version: ReadableVersion = SCHEMA_VERSION
    quantile: float
    tail: Literal["high", "low"] = Field(description="high: (T_q, inf); low: (0, T_q)")
    layer: str
    unit: int | None = None
    threshold: float | None = Field(None, description="T_q; null if the unit has no value")
    mask_pixels: int | None = None
    label: ConceptScore | None = None
    formula: str | None = Field(None, description="compositional jobs: the best formula")
    formula_iou: float | None = None
    formula_atoms: list[Concept] | None = Field(
        None, description="compositional jobs: the best formula's positive atoms (not under "
        "a NOT), left to right, repeats kept")
    curve: list[ConceptScore] | None = Field(
        None, description="the unit's curve concepts (its 5 concepts of highest "
        "IoU at any quantile of the sweep, that order) with their IoU at this quantile")
    category_shares: dict[str, float] | None = None
    formula_category_shares: dict[str, float] | None = None


class RangesImportanceRow(_Record):
    """One row of ``studies/ranges_importance.jsonl``.

    The images whose argmax class changes when a forward hook zeroes activations inside range
    ``range_index`` (0 = lowest; ranges sorted by lower bound): of every unit of the layer at
    once (``unit`` null) or of one unit (``unit`` set).
    """

    schema_version: ReadableVersion = SCHEMA_VERSION
    layer: str
    range_index: int = Field(ge=0)
    unit: int | None = Field(None, description="null: every unit's k-th range at once")
    lo: float | None = Field(None, description="unit rows: the range's lower bound")
    hi: float | None = Field(None, description="unit rows: the range's upper bound")
    units_zeroed: int | None = Field(None, description="layer rows: units with a k-th range")
    images: int = Field(ge=0, description="valid images forwarded")
    flips: int = Field(ge=0, description="images whose argmax class changed")
    flip_fraction: float | None = Field(description="flips / images; null without images")


class AblationEffect(_Record):
    """What zeroing a group of units does to the model's decisions on a set of images."""

    images: int = Field(ge=0)
    flips: int = Field(ge=0, description="images whose argmax class changed")
    flip_fraction: float | None = Field(description="flips / images; null without images")
    probability_drop: float | None = Field(
        description="mean over the images of p(c) - p'(c), c the class predicted unablated "
                    "(softmax of the logits); null without images")


class UnitAblationRow(_Record):
    """One row of ``studies/unit_ablation.jsonl``: the units zeroed together and the effect.

    ``kind: label`` zeroes the interpretable units of a layer that share a NetDissect label;
    ``kind: unit`` one unit alone (``single_units``), split by its own label when it has one.
    """

    schema_version: ReadableVersion = SCHEMA_VERSION
    layer: str
    kind: Literal["label", "unit"]
    units: list[int]
    label: Concept | None = Field(description="the units' label; null for an unlabelled unit")
    overall: AblationEffect
    with_concept: AblationEffect | None = Field(
        description="on the images that contain the label's concept; null without a label")
    without_concept: AblationEffect | None = Field(
        description="on the images that do not; null without a label")


class HeuristicsRow(_Record):
    """One row of ``studies/heuristics.jsonl`` (CCE's ``compare_heuristics``).

    A range row (``unit`` set) is one beam search of a unit's range with ``heuristic``; a
    layer row (``unit`` null) sums a heuristic's searches over the layer (``ranges`` of them)
    and gives the means per search and ``same_best``, the searches whose best formula equals
    the one without pruning (heuristic ``none``; null when ``none`` was not run).
    """

    schema_version: ReadableVersion = SCHEMA_VERSION
    layer: str
    heuristic: Literal["none", "areas", "cfh", "mmesh"]
    unit: int | None = None
    range_index: int | None = Field(None, ge=0)
    visited: float = Field(ge=0, description="states visited (exact IoUs); layer rows: mean")
    seconds: float = Field(ge=0, description="search wall-clock seconds; layer rows: mean")
    formula: str | None = Field(None, description="range rows: the best formula")
    iou: float | None = Field(None, description="range rows: its IoU")
    ranges: int | None = Field(None, description="layer rows: searches")
    total_seconds: float | None = Field(None, description="layer rows: summed seconds")
    same_best: int | None = Field(None, description="layer rows: best formula as with none")


class ConceptBlackoutRow(_Record):
    """One row of ``studies/concept_blackout.jsonl``.

    A unit row (``unit`` set) is Delta(u, c) = sum a'/sum a - 1 over the images annotated
    with concept c, a the unit's mean activation on the image and a' on its copy with c's
    pixels black, and the unit's IoU with c. A concept row (``unit`` null) is the Pearson
    correlation of IoU and Delta over the layer's units.
    """

    schema_version: ReadableVersion = SCHEMA_VERSION
    layer: str
    concept: Concept
    unit: int | None = None
    images: int = Field(ge=0, description="images with the concept (unit rows: those whose "
                                          "two means were finite)")
    delta: float | None = Field(None, description="unit rows; null when not finite")
    iou: float | None = Field(None, description="unit rows: the scoring stage's IoU")
    units: int | None = Field(None, description="concept rows: units with a finite delta")
    pearson_r: float | None = Field(None, description="concept rows; null for < 2 units or "
                                                      "constant values")
    pearson_p: float | None = None


class DefaultFormula(_Record):
    """A formula of the baseline and how many of its unit ranges it explains."""

    text: str
    count: int = Field(ge=1)


class RangeSpecialization(_Record):
    """Per range index of the trained job: units whose formula is a baseline default."""

    range_index: int = Field(ge=0)
    unspecialized: int = Field(ge=0, description="units whose formula is a default formula")
    weakly_specialized: int = Field(
        ge=0, description="other units whose formula's left operand is a default left operand")
    unspecialized_share: float = Field(description="unspecialized / units")
    weakly_specialized_share: float = Field(description="weakly_specialized / units")


class LayerComparison(_Record):
    """One layer of ``ray-dissect compare``."""

    layer: str
    units: int = Field(ge=0, description="units of the layer (the denominator of the shares)")
    top_k: int = Field(ge=0, description="ceil(0.2 * units)")
    default_formulas: list[DefaultFormula] = Field(
        description="the top_k commonest baseline formulas (ties: first seen in unit, range "
                    "order)")
    default_left: list[str] = Field(
        description="CCE's 'default two': the distinct left operands of the baseline formulas "
                    "that occur more than once, commonest first, at most top_k")
    ranges: list[RangeSpecialization]


class CompareReport(_Record):
    """``ray-dissect compare TRAINED BASELINE``: CCE's analyze_activations over all units."""

    schema_version: ReadableVersion = SCHEMA_VERSION
    trained: str = Field(description="job directory of the trained model")
    baseline: str = Field(description="job directory of the baseline (e.g. random-init) model")
    trained_spec_hash: str
    baseline_spec_hash: str
    layers: list[LayerComparison]


class LayerSearchComparison(_Record):
    """One layer of ``ray-dissect compare-search``: the beam's answers against the optimum."""

    layer: str
    explanations: int = Field(description="ranges with an optimal search's certificate")
    proved: int = Field(description="of which proved optimal (the rest ran out of budget)")
    suboptimal: int = Field(description="ranges whose beam formula has a lower IoU")
    suboptimal_share: float
    iou_lost_mean: float = Field(description="mean IoU the beam lost, over every range")
    iou_lost_max: float
    relative_lost_max: float = Field(description="largest (best - beam) / best")
    seconds_median: float | None = Field(description="optimal search, per range")
    seconds_p99: float | None


class SearchComparisonReport(_Record):
    """``ray-dissect compare-search DIR``: how often and by how much the beam search missed
    the optimum, from one job run with ``method.search: optimal``."""

    schema_version: ReadableVersion = SCHEMA_VERSION
    job: str
    spec_hash: str
    layers: list[LayerSearchComparison]


STUDY_RECORD_TYPES: dict[str, type[BaseModel]] = {
    "threshold_sweep_row": ThresholdSweepRow,
    "ranges_importance_row": RangesImportanceRow,
    "unit_ablation_row": UnitAblationRow,
    "concept_blackout_row": ConceptBlackoutRow,
    "heuristics_row": HeuristicsRow,
    "compare_report": CompareReport,
    "search_comparison_report": SearchComparisonReport,
}
