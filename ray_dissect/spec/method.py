"""The method sub-specs (`kind`: netdissect, compositional, clustered, none) and their union."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from ray_dissect.spec.base import ADDED_LATER, Frozen, tag_of


class _MethodBase(Frozen):
    """What every method computes: NetDissect labels from the top-``quantile`` activations.

    ``denominator: plain`` is the dataset-wide IoU |B and L| / |B or L| (compexp, CCE);
    ``category`` is NetDissect-Lite's category-conditional activation term.
    """

    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.005
    """Each unit's mask is its top `quantile` of activations: the threshold is the exact 1 -
    quantile quantile over all images and positions.
    """
    iou_threshold: Annotated[float, Field(ge=0, le=1)] = 0.04
    """A unit is interpretable when its label's IoU is at least this."""
    denominator: Literal["plain", "category"] = "plain"
    """`plain`: dataset-wide |B and L| / |B or L| (compexp, CCE); `category`: NetDissect-Lite's
    category-conditional term.
    """
    top_k: Annotated[int, Field(gt=0, le=100)] = 5
    """How many best concepts each record lists in `top`."""


class NetDissectMethod(_MethodBase):
    """Network Dissection: one label per unit (Bau et al. 2017).

    ``threshold: per_image`` is inner-detectors' rule instead of the dataset-wide quantile:
    each image's unit mask is the upsampled map above the 1 - ``quantile`` quantile of that
    image's own map (at feature resolution; ``quantile: 0.5``, the per-image median, is
    inner-detectors' default), and a concept's score is the mean, over the valid images that
    contain it, of the per-image IoU (0 when mask and concept are both empty). The records
    then have no dataset threshold (``threshold`` null).
    """

    kind: Literal["netdissect"] = "netdissect"
    """`netdissect`: one label per unit (Network Dissection)."""
    threshold: Annotated[Literal["dataset", "per_image"], ADDED_LATER] = "dataset"
    """`dataset`: one exact threshold per unit (NetDissect); `per_image`: each image's own
    1 - quantile of the unit's map (inner-detectors)."""


class SearchBudget(Frozen):
    """Limits of ``search: optimal`` per unit and range; when one runs out the record keeps
    the best formula found with ``optimal: false`` and the proved bound."""

    seconds: Annotated[float, Field(gt=0)] | None = None
    """Wall seconds per unit and range."""
    nodes: Annotated[int, Field(gt=0)] | None = None
    """Nodes expanded per unit and range."""


class CompositionalMethod(_MethodBase):
    """Compositional Explanations (Mu & Andreas 2020): a formula per unit, by beam search.

    Formulas over the dataset's concepts with OR, AND, AND NOT, of at most ``length`` leaves
    (``count_not`` also counts NOT, as compexp does). The first beam holds ``first_beam``
    atoms (default 2 x ``beam``, as CCE; compexp used ``beam``). ``dedup: equivalence`` (CCE)
    drops logically equivalent candidates; ``string`` (compexp) only identical ones.
    ``heuristic`` prunes candidates with CCE's admissible IoU bounds (same result, fewer exact
    IoUs counted in ``visited``; a study tool: it needs every pixel's label set in memory).
    ``concept_masking`` adds CCE's cosine concept-masking score of each explanation (forward
    passes of the images containing the formula, everything outside it randomly dimmed), on
    the model actors; ``masking_images`` caps the images per explanation (the first ones).
    ``search: optimal`` then proves the formula of maximal IoU over the beam's whole space by
    branch and bound, starting from the beam's answer (``search_budget`` makes it anytime);
    see docs/optimal.md.
    """

    kind: Literal["compositional"] = "compositional"
    """`compositional`: a formula per unit (Compositional Explanations)."""
    length: Annotated[int, Field(ge=1, le=10)] = 3
    """Most concepts (leaves) in a formula."""
    beam: Annotated[int, Field(ge=1, le=100)] = 5
    """Beam width of the search, honoured at every step."""
    first_beam: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Atoms in the first beam (default: 2 x `beam`, as CCE; compexp used `beam`)."""
    count_not: bool = False
    """Also count NOT toward `length` (compexp)."""
    dedup: Literal["equivalence", "string"] = "equivalence"
    """`equivalence` drops logically equivalent candidates (pyeda, CCE); `string` only identical
    text (compexp).
    """
    heuristic: Literal["none", "mmesh", "cfh", "areas"] = "none"
    """Prune with CCE's admissible IoU bounds (same result, fewer exact IoUs in `visited`; keeps
    every pixel's label-set id in memory). A study option.
    """
    concept_masking: bool = False
    """Add CCE's cosine concept-masking score of each explanation (forward passes on the model
    actors).
    """
    masking_images: Annotated[int, Field(gt=0)] | None = None
    """At most this many images per explanation for `concept_masking` (the first ones); default
    all.
    """
    search: Annotated[Literal["beam", "optimal"], ADDED_LATER] = "beam"
    """`beam` (CCE's search); `optimal` proves the formula of maximal IoU over the beam's whole
    space by branch and bound, started from the beam's answer (see docs/optimal.md).
    """
    search_budget: Annotated[SearchBudget | None, ADDED_LATER] = None
    """Limits per unit and range of `search: optimal` (anytime: the record keeps the proved
    bound); default none.
    """

    @model_validator(mode="after")
    def _budget_needs_optimal(self) -> CompositionalMethod:
        if self.search_budget is not None and self.search != "optimal":
            raise ValueError(f"method.search_budget is set but method.search is "
                             f"{self.search!r}; expected search: optimal (or drop the budget)")
        return self


class ClusteredMethod(CompositionalMethod):
    """Clustered Compositional Explanations (La Rosa et al. 2023): a formula per activation range.

    Each unit's activations (exact zeros dropped when all are >= 0) are split into ``clusters``
    ranges by 1-D k-means (k-means++ seeded by ``seed``). A range's mask holds the upsampled
    values inside [lo, hi] (``bounds: inclusive``, the default, so every member value counts)
    or strictly inside (lo, hi) (``strict``, as CCE's code). ``clusters: 1`` is the quantile
    mode: the range (threshold, +inf), exactly as ``compositional``.
    """

    kind: Literal["clustered"] = "clustered"  # type: ignore[assignment]
    """`clustered`: a formula per activation range (Clustered Compositional Explanations)."""
    clusters: Annotated[int, Field(ge=1, le=32)] = 5
    """Activation ranges per unit, by 1-D k-means (`1`: the quantile range, as `compositional`)."""
    seed: int = 0
    """Seed of the k-means++ initialisation (best of 10 inits)."""
    bounds: Literal["inclusive", "strict"] = "inclusive"
    """A range's mask: `inclusive` lo <= a <= hi, or `strict` lo < a < hi (CCE's code)."""


class NoMethod(Frozen):
    """No dissection: for datasets without concept labels (``format: images``) or jobs that
    only want activations, top images and analyses. Records then carry no labels."""

    kind: Literal["none"] = "none"
    """`none`: no dissection; activations, top images and analyses only."""


DissectionMethod = NetDissectMethod | CompositionalMethod | ClusteredMethod


METHOD_KINDS = ("netdissect", "compositional", "clustered", "none")
Method = Annotated[
    Annotated[NetDissectMethod, Tag("netdissect")]
    | Annotated[CompositionalMethod, Tag("compositional")]
    | Annotated[ClusteredMethod, Tag("clustered")]
    | Annotated[NoMethod, Tag("none")],
    Discriminator(tag_of("kind", "netdissect"))]
