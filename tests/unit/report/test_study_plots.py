"""The studies page's SVG plots: well-formed, their geometry proportional to the numbers
given, their empty states, byte-identical reruns."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ray_dissect.report import study_plots as sp


def _svg(plot: sp.Plot) -> ET.Element:
    return ET.fromstring(plot.svg)


def test_share_lines_put_each_category_at_its_share() -> None:
    """One polyline per category; each point's height above the axis is share x 120 px."""
    quantiles = [(0.005, "high"), (0.5, "high"), (0.9, "low")]
    shares = {"object": [1.0, 0.5, 0.0], "color": [0.0, 0.5, 1.0]}
    plot = sp.share_lines(quantiles, shares)
    lines = _svg(plot).findall("polyline")
    assert [line.find("title").text for line in lines] == ["object", "color"]
    for line, cat in zip(lines, shares, strict=True):
        ys = [float(p.split(",")[1]) for p in line.get("points").split()]
        assert [round(134 - y, 1) for y in ys] == [120 * s for s in shares[cat]]
    assert plot.rows == [("0.005", "high", "1.0000", "0.0000"),
                         ("0.5", "high", "0.5000", "0.5000"), ("0.9", "low", "0.0000", "1.0000")]
    assert "low tail" in plot.svg and sp.share_lines(quantiles, shares).svg == plot.svg


def test_flip_bars_heights_and_unit_spread() -> None:
    """Bar heights are proportional to the all-units fraction; the table gives the per-unit
    min, median and max."""
    plot = sp.flip_bars([sp.RangeFlips(0, 0.25, (0.0, 0.1, 0.2)),
                         sp.RangeFlips(1, 0.5, (0.4,)), sp.RangeFlips(2, None, ())])
    bars = [r for r in _svg(plot).iter("rect") if r.get("class") == "bar"]
    assert [float(b.get("height")) for b in bars] == [55.0, 110.0]
    assert plot.rows == [(0, "0.2500", 3, "0.0000", "0.1000", "0.2000"),
                         (1, "0.5000", 1, "0.4000", "0.4000", "0.4000"),
                         (2, "-", 0, "-", "-", "-")]


def test_paired_bars_start_at_zero_for_negative_values() -> None:
    """A negative drop is drawn left of the zero line, a positive one right of it."""
    plot = sp.paired_bars([("a [0]", 0.3, -0.1), ("b [1]", None, 0.2)], "t", "drop")
    rects = list(_svg(plot).iter("rect"))[:3]
    zero = float(_svg(plot).find("line").get("x1"))
    assert float(rects[0].get("x")) == pytest.approx(zero, abs=0.1)
    assert float(rects[1].get("x")) + float(rects[1].get("width")) == pytest.approx(zero,
                                                                                   abs=0.1)
    assert plot.rows == [("a [0]", "0.3000", "-0.1000"), ("b [1]", "-", "0.2000")]


def test_blackout_scatter_prints_r_and_places_points() -> None:
    """The title carries Pearson r; the dot of the largest IoU sits at the right edge and the
    largest delta at the top."""
    plot = sp.blackout_scatter("water", [(0, 0.0, -0.5), (1, 0.2, 0.5), (2, 0.1, 0.0)], 0.866)
    root = _svg(plot)
    assert root.find("title").text == "water: IoU against blackout change, Pearson r = 0.866"
    dots = [(float(c.get("cx")), float(c.get("cy"))) for c in root.iter("circle")]
    assert dots[1] == (268.0, 12.0) and dots[0] == (48.0, 142.0)


def test_empty_inputs_say_so() -> None:
    """Every plot renders an SVG message, not an exception, without data."""
    for plot in (sp.share_lines([], {}), sp.flip_bars([]), sp.paired_bars([], "t", "x"),
                 sp.blackout_scatter("c", [], None), sp.specialization_bars([])):
        assert plot.empty and plot.rows == [] and _svg(plot).find("text").get("class") == "empty"


def test_specialization_bars_table() -> None:
    """The compare plot's table lists each range's two shares."""
    plot = sp.specialization_bars([(0, 0.5, 0.0), (1, 0.0, 0.25)])
    assert plot.rows == [(0, "0.5000", "0.0000"), (1, "0.0000", "0.2500")]
    heights = sorted(float(r.get("height")) for r in _svg(plot).iter("rect")
                     if r.get("fill") in (sp.BAR_COLOR, sp.WITHOUT_COLOR)
                     and float(r.get("width")) == 18)
    assert heights == [0.0, 0.0, 55.0, 110.0]
