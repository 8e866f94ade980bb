"""CCE's ``compute_metrics`` summary: per layer and activation range, the mean of each
explanation metric over the layer's units.

A row per (layer, range index) of the records' explanations: ``ranges`` (units with that
range), ``explained`` (of those, with a formula), the mean ``iou`` over all of them (0 for
a range without a formula), the mean ``visited`` (search states) and, for each metric of
:data:`METRIC_NAMES`, its mean over the ranges that have it (None when none has it;
``concept_masking`` only with ``method.concept_masking``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ray_dissect.records.schema import Explanation, UnitRecord

METRIC_NAMES = ("activation_coverage", "detection_accuracy", "samples_coverage",
                "explanation_coverage", "concept_masking")
RANGE_METRIC_COLUMNS = ("layer", "range_index", "ranges", "explained", "iou", "visited",
                        *METRIC_NAMES)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _metric(e: Explanation, name: str) -> float | None:
    value = getattr(e.metrics, name) if e.metrics is not None else None
    return None if value is None else float(value)


def range_metric_rows(layer: str, records: Sequence[UnitRecord]) -> list[dict[str, Any]]:
    """The layer's rows (see the module doc), by ascending range index."""
    by_range: dict[int, list[Explanation]] = defaultdict(list)
    for rec in records:
        for e in rec.explanations:
            by_range[e.range_index].append(e)
    rows = []
    for k in sorted(by_range):
        exps = by_range[k]
        row: dict[str, Any] = {
            "layer": layer, "range_index": k, "ranges": len(exps),
            "explained": sum(1 for e in exps if e.text is not None),
            "iou": _mean([e.iou for e in exps]),
            "visited": _mean([float(e.visited) for e in exps])}
        for name in METRIC_NAMES:
            row[name] = _mean([v for e in exps if (v := _metric(e, name)) is not None])
        rows.append(row)
    return rows
