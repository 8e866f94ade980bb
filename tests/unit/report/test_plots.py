"""The inline SVG plots: their numbers against numpy and the records, their empty states."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest

from ray_dissect.records.schema import ConceptScore, LayerSummary, Provenance, UnitRecord
from ray_dissect.report import plots

PROV = Provenance(job="t", spec_hash="0" * 16, package_version="0")


def _rec(unit: int, name: str | None, category: str, iou: float, t: float = 0.04) -> UnitRecord:
    label = ConceptScore(name=name, number=unit + 1, category=category, iou=iou) if name else None
    return UnitRecord(layer="l", unit=unit, threshold=1.0, label=label,
                      interpretable=label is not None and iou >= t, per_category={}, top=[],
                      mask_pixels=1, nonfinite=0, provenance=PROV)


RECORDS = [_rec(0, "water", "object", 0.2), _rec(1, "water", "object", 0.1),
           _rec(2, "sky", "object", 0.3), _rec(3, "red", "color", 0.05),
           _rec(4, "beach", "scene", 0.07), _rec(5, "grass", "object", 0.01),
           _rec(6, None, "", 0.0)]


def _svg(plot: plots.Plot) -> ET.Element:
    return ET.fromstring(plot.svg)


def test_iou_histogram_bins_equal_numpy() -> None:
    """40 bins on [0, max IoU]: the table's counts are numpy.histogram's."""
    ious = [r.label.iou if r.label else 0.0 for r in RECORDS]
    plot = plots.iou_histogram(RECORDS, 0.04)
    counts, edges = np.histogram(ious, 40, (0.0, max(ious)))
    assert [row[2] for row in plot.rows] == counts.tolist()
    assert float(plot.rows[-1][1]) == pytest.approx(edges[-1], abs=1e-4)
    assert _svg(plot).find("title") is not None and "mean 0.104" in plot.svg


def test_concept_bars_count_interpretable_units_per_concept() -> None:
    """One bar per label concept of the interpretable units, height = its units; groups in
    NetDissect-Lite's category order, concepts by count then max IoU."""
    plot = plots.concept_bars(RECORDS, 0.04)
    want = Counter(r.label.name for r in RECORDS if r.interpretable and r.label)
    bars = {b.get("data-concept"): int(b.get("data-units"))
            for b in _svg(plot).iter("rect") if b.get("class") == "bar"}
    assert bars == dict(want)
    assert [row[1] for row in plot.rows] == ["water", "sky", "beach", "red"]
    heights = {b.get("data-concept"): float(b.get("height"))
               for b in _svg(plot).iter("rect") if b.get("class") == "bar"}
    assert heights["water"] == pytest.approx(2 * heights["sky"])


def test_category_counts_and_layer_stacks() -> None:
    """Per-category bars hold the summary's counts; the cross-layer table has one row per
    layer and category."""
    cats = plots.category_counts({"object": 3, "color": 1, "scene": 1})
    assert cats.rows == [("object", 3), ("scene", 1), ("color", 1)]
    s = LayerSummary(layer="l", units=7, interpretable=5, unique_concepts=4,
                     by_category={"object": 3, "color": 1, "scene": 1}, top_concepts=[])
    stacks = plots.layer_stacks([s], {"l": {"object": 2, "color": 1, "scene": 1}})
    assert ("l", "object", 3, 2) in stacks.rows and len(stacks.rows) == 3
    _svg(stacks)


def test_activation_histogram_table() -> None:
    """The unit histogram's table starts with the zeros, then one row per bin."""
    plot = plots.activation_histogram([0.0, 0.5, 1.0], [3, 4], 7, [(0.6, "threshold")], 2)
    assert plot.rows == [("0", "0", 7), ("0", "0.5", 3), ("0.5", "1", 4)]
    assert "threshold at 0.6" in _svg(plot).find("desc").text


def test_every_plot_has_an_empty_state() -> None:
    """With no interpretable unit, no record or no formula every plot is a valid SVG that
    says so (NetDissect-Lite crashed here)."""
    none = [_rec(0, "water", "object", 0.01), _rec(1, None, "", 0.0)]
    empty = [plots.concept_bars(none, 0.04), plots.iou_histogram([], 0.04),
             plots.category_counts({}), plots.explained_ranges(none, 0.04),
             plots.formula_stats(none), plots.layer_stacks([], {}),
             plots.activation_histogram([], [], 0, [], 0)]
    for plot in empty:
        assert plot.empty and plot.rows == [] and _svg(plot).find("text") is not None
    assert not plots.iou_histogram(none, 0.04).empty


def test_formula_shape_counts_concepts_and_operators() -> None:
    """(a OR b) AND NOT c has 3 concepts, one AND, one OR, one NOT."""
    from ray_dissect.records.schema import Explanation

    node = {"op": "and", "left": {"op": "or", "left": {"op": "leaf", "concept": 1, "name": "a"},
                                  "right": {"op": "leaf", "concept": 2, "name": "b"}},
            "right": {"op": "not", "child": {"op": "leaf", "concept": 3, "name": "c"}}}
    e = Explanation(range_index=0, lo=0, hi=None, inclusive=False, mask_pixels=1, formula=node,
                    text="x", iou=0.5, metrics=None, visited=1, best_unary=None, beam=[])
    assert plots.formula_shape(e.formula) == (3, {"AND": 1, "OR": 1, "NOT": 1})


def test_plots_are_deterministic() -> None:
    """Two renders of the same records are the same bytes."""
    assert plots.concept_bars(RECORDS, 0.04).svg == plots.concept_bars(list(RECORDS), 0.04).svg
