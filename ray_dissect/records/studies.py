"""Records of the studies, one JSON Lines file each under ``DIR/studies/``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ray_dissect.records.schema import SCHEMA_VERSION, ConceptScore, _Record


class ThresholdSweepRow(_Record):
    """One row of ``studies/threshold_sweep.jsonl``.

    A unit row (``unit`` set) is a unit's labelling at one quantile; a layer row (``unit``
    null) holds ``category_shares``: the share of each category among that quantile's
    interpretable labels (IoU >= the job's iou_threshold).
    """

    schema_version: Literal[3] = SCHEMA_VERSION
    quantile: float
    tail: Literal["high", "low"] = Field(description="high: (T_q, inf); low: (0, T_q)")
    layer: str
    unit: int | None = None
    threshold: float | None = Field(None, description="T_q; null if the unit has no value")
    mask_pixels: int | None = None
    label: ConceptScore | None = None
    formula: str | None = Field(None, description="compositional jobs: the best formula")
    formula_iou: float | None = None
    category_shares: dict[str, float] | None = None


STUDY_RECORD_TYPES = {"threshold_sweep_row": ThresholdSweepRow}
