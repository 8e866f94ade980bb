"""The studies page's plots as inline SVG, drawn with :mod:`ray_dissect.report.plots`' helpers.

The plots CCE and inner-detectors draw: category shares of the labels against the quantile
(``compare_thresholds``), flip fraction per range index (``compute_ranges_importance``), the
effect of zeroing each label's units on images with and without its concept, the IoU against
the blackout change of each unit for one concept (``make verify``), and the shares of
unspecialized and weakly specialized units per range (``analyze_activations``). Each returns a
:class:`~ray_dissect.report.plots.Plot` (SVG plus its numbers as a table); an empty input
gives an SVG that says so. Output depends only on the input (byte-identical reruns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from ray_dissect.report.plots import (
    BAR_COLOR,
    LINE_COLOR,
    OTHER_COLOR,
    Plot,
    _empty,
    _num,
    _rect,
    _svg,
    _text,
    category_color,
)

WITHOUT_COLOR = "#E69F00"
FRAME = ' stroke="#767676"'
TICK = ' class="tick"'
TICK_END = ' text-anchor="end" class="tick"'
TICK_MID = ' text-anchor="middle" class="tick"'


def fmt(x: float | None, digits: int = 4) -> str:
    """A number as the page prints it (``digits`` decimals), '-' for None or not finite."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _axis(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty [lo, hi] (widened by 1 around a single value)."""
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _y(value: float, lo: float, hi: float, top: float, area: float) -> float:
    """The y pixel of ``value`` on an axis [lo, hi] drawn from ``top`` down ``area`` px."""
    return top + area - area * (value - lo) / (hi - lo)


def _line(x1: float, y1: float, x2: float, y2: float, color: str, extra: str = "") -> str:
    return (f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{color}"{extra}/>')


def _legend(x: float, y: float, items: Sequence[tuple[str, str]]) -> list[str]:
    """A vertical legend: one swatch and name per (name, colour)."""
    return [_rect(x, y + 16 * i, 10, 10, color) + _text(x + 14, y + 9 + 16 * i, name,
                                                        ' class="label"')
            for i, (name, color) in enumerate(items)]


def share_lines(quantiles: Sequence[tuple[float, str]], shares: dict[str, list[float]],
                what: str = "interpretable labels") -> Plot:
    """Category shares of the interpretable labels (or of ``what``) against the quantile:
    one line per category (CCE's ``compare_thresholds`` figure, high and low tails on one
    axis).

    Args:
        quantiles: (quantile, tail) per point, in axis order.
        shares: per category, its share at each quantile (len(quantiles) values in [0, 1]).
    """
    cats = list(shares)
    columns = ("quantile", "tail", *cats)
    title = f"Category shares of the {what} against the quantile"
    if not quantiles or not cats:
        return _empty(title, f"No {what} at any quantile.", columns)
    lines = [(c, category_color(c), list(shares[c])) for c in cats]
    body, width, height = _quantile_lines(quantiles, lines, 1.0)
    desc = f"{len(cats)} categories over {len(quantiles)} quantiles."
    rows = [(f"{q:g}", t, *(fmt(shares[c][i]) for c in cats))
            for i, (q, t) in enumerate(quantiles)]
    return Plot(_svg(width, height, title, desc, body), columns, rows)


CURVE_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def iou_curves(unit: int, quantiles: Sequence[tuple[float, str]],
               curves: Sequence[tuple[str, Sequence[float]]]) -> Plot:
    """One unit's IoU against the quantile, a line per concept (inner-detectors'
    ``activthres`` plot per unit).

    Args:
        quantiles: (quantile, tail) per point, in axis order.
        curves: per concept, its name and its IoU at each quantile (len(quantiles) values).
    """
    columns = ("quantile", "tail", *(name for name, _ in curves))
    title = f"Unit {unit}: IoU against the quantile"
    if not quantiles or not curves:
        return _empty(title, f"Unit {unit} has no concept with a positive IoU.", columns)
    peak = max(max(v) for _, v in curves)
    lines = [(name, CURVE_COLORS[i % len(CURVE_COLORS)], list(v))
             for i, (name, v) in enumerate(curves)]
    body, width, height = _quantile_lines(quantiles, lines, peak if peak > 0 else 1.0)
    desc = f"{len(curves)} concepts over {len(quantiles)} quantiles; highest IoU {fmt(peak)}."
    rows = [(f"{q:g}", t, *(fmt(v[i]) for _, v in curves))
            for i, (q, t) in enumerate(quantiles)]
    return Plot(_svg(width, height, title, desc, body), columns, rows)


def _quantile_lines(quantiles: Sequence[tuple[float, str]],
                    lines: Sequence[tuple[str, str, Sequence[float]]], top_value: float
                    ) -> tuple[list[str], float, float]:
    """The SVG body of lines (name, colour, values in [0, top_value]) over the quantile
    axis (high and low tails apart), with a legend; returns (body, width, height)."""
    left, top, area, step = 40.0, 14.0, 120.0, 44.0
    width = left + step * max(len(quantiles) - 1, 1) + 30
    x = [left + 10 + step * i for i in range(len(quantiles))]
    body = [_rect(left, top, width - left - 10, area, "none", FRAME),
            _text(left - 4, top + 8, f"{top_value:.3g}", TICK_END),
            _text(left - 4, top + area, "0", TICK_END)]
    body += [_text(xi, top + area + 14, f"{q:g}", TICK_MID)
             for xi, (q, _) in zip(x, quantiles, strict=True)]
    tails = [t for _, t in quantiles]
    if "high" in tails and "low" in tails:
        split = x[tails.index("low")] - step / 2
        body.append(_line(split, top, split, top + area, OTHER_COLOR, ' stroke-dasharray="3 3"'))
        body.append(_text(split - 3, top + area + 28, "high tail", TICK_END))
        body.append(_text(split + 3, top + area + 28, "low tail", TICK))
    else:
        body.append(_text(left + (width - left) / 2, top + area + 28, "quantile", TICK_MID))
    for name, color, values in lines:
        pts = [(xi, _y(v, 0.0, top_value, top, area)) for xi, v in zip(x, values, strict=True)]
        path = " ".join(f"{_num(a)},{_num(b)}" for a, b in pts)
        body.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                    f'stroke-width="2"><title>{escape(name)}</title></polyline>')
        body += [f'<circle cx="{_num(a)}" cy="{_num(b)}" r="2.5" fill="{color}"/>'
                 for a, b in pts]
    body += _legend(width + 4, top, [(name, color) for name, color, _ in lines])
    legend = max(len(name) for name, _, _ in lines) * 7 + 24
    return body, width + max(90, legend), max(top + area + 34, 20 + 16 * len(lines))


@dataclass(frozen=True)
class RangeFlips:
    """Flips of one range index: all units at once, and each unit alone.

    Attributes:
        range_index: k (0 = the lowest range).
        fraction: the all-units row's flip fraction (None without images or row).
        units: the per-unit rows' flip fractions (finite ones only).
    """

    range_index: int
    fraction: float | None
    units: tuple[float, ...] = ()


def _bar_frame(peak: float, groups: int, group: float, left: float = 44.0, top: float = 14.0,
               area: float = 110.0) -> tuple[float, float, list[str]]:
    """A vertical bar chart's frame: (axis top value, plot width, SVG elements of the frame
    and its 0 / top ticks) for ``groups`` groups of ``group`` px each."""
    hi = peak if peak > 0 else 1.0
    width = left + group * groups + 10
    body = [_rect(left, top, width - left - 10, area, "none", FRAME),
            _text(left - 4, top + 8, f"{hi:.3g}", TICK_END),
            _text(left - 4, top + area, "0", TICK_END)]
    return hi, width, body


def flip_bars(items: Sequence[RangeFlips]) -> Plot:
    """Flip fraction per range index: a bar for all units zeroed at once and, over it, the
    per-unit spread (min to max, a tick at the median)."""
    columns = ("range", "flip fraction (all units)", "units", "unit min", "unit median",
               "unit max")
    title = "Prediction flips when each activation range is zeroed"
    if not items:
        return _empty(title, "No range-importance row in this layer.", columns)
    peak = max([i.fraction or 0.0 for i in items] + [max(i.units, default=0.0) for i in items])
    left, top, area, group = 44.0, 14.0, 110.0, 56.0
    hi, width, body = _bar_frame(peak, len(items), group)
    rows: list[tuple[object, ...]] = []
    for n, item in enumerate(items):
        bx = left + n * group + 12
        if item.fraction is not None:
            y = _y(item.fraction, 0.0, hi, top, area)
            body.append(_rect(bx, y, 32, top + area - y, BAR_COLOR, ' class="bar"'))
        stats = _spread(item.units)
        if stats is not None:
            ys = [_y(v, 0.0, hi, top, area) for v in stats]
            cx = bx + 16
            body += [_line(cx, ys[0], cx, ys[2], LINE_COLOR, ' stroke-width="2"'),
                     _line(cx - 6, ys[0], cx + 6, ys[0], LINE_COLOR, ' stroke-width="2"'),
                     _line(cx - 6, ys[2], cx + 6, ys[2], LINE_COLOR, ' stroke-width="2"'),
                     f'<circle cx="{_num(cx)}" cy="{_num(ys[1])}" r="3" fill="{LINE_COLOR}"/>']
        body.append(_text(bx + 16, top + area + 14, f"range {item.range_index}", TICK_MID))
        rows.append((item.range_index, fmt(item.fraction), len(item.units),
                     *(fmt(v) for v in (stats or (None, None, None)))))
    desc = ("Bars: all units' k-th range zeroed at once; orange whiskers: one unit at a time "
            "(min to max, dot at the median).")
    return Plot(_svg(width, top + area + 22, title, desc, body), columns, rows)


def _spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(min, median, max) of ``values``, None when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.min()), float(np.median(arr)), float(arr.max())


def paired_bars(items: Sequence[tuple[str, float | None, float | None]], title: str,
                what: str) -> Plot:
    """Two horizontal bars per row: on images with the concept (blue) and without (orange,
    lighter); values may be negative (the axis then starts below 0).

    Args:
        items: (row label, value with the concept, value without).
        what: the quantity, for the table header.
    """
    columns = ("units zeroed", f"{what} with concept", f"{what} without concept")
    if not items:
        return _empty(title, "No label group to ablate in this layer.", columns)
    values = [v for _, a, b in items for v in (a, b) if v is not None]
    lo, hi = _axis(min([0.0, *values]), max([0.0, *values]))
    left, bar_area, row = 150.0, 220.0, 30.0

    def px(v: float) -> float:
        return left + bar_area * (v - lo) / (hi - lo)

    zero = px(0.0)
    body = [_line(zero, 4, zero, 8 + row * len(items), "#767676")]
    for i, (label, with_c, without_c) in enumerate(items):
        y = 8 + i * row
        body.append(_text(left - 6, y + 16, label, ' text-anchor="end" class="label"'))
        for j, (v, color) in enumerate(((with_c, BAR_COLOR), (without_c, WITHOUT_COLOR))):
            if v is not None:
                a, b = sorted((zero, px(v)))
                body.append(_rect(a, y + j * 12, max(b - a, 0.5), 10, color,
                                  ' fill-opacity="0.7"' if j else ""))
            body.append(_text(left + bar_area + 6, y + 9 + j * 12, fmt(v, 3), TICK))
    base = 12 + row * len(items)
    body += [_text(px(lo), base + 10, f"{lo:.3g}", TICK_MID),
             _text(px(hi), base + 10, f"{hi:.3g}", TICK_MID)]
    body += _legend(left, base + 18, [("images with the concept", BAR_COLOR),
                                      ("images without it", WITHOUT_COLOR)])
    desc = f"{what} per label group, on images with and without the label's concept."
    rows = [(label, fmt(a), fmt(b)) for label, a, b in items]
    return Plot(_svg(left + bar_area + 50, base + 52, title, desc, body), columns, rows)


def blackout_scatter(concept: str, points: Sequence[tuple[int, float, float]],
                     r: float | None) -> Plot:
    """inner-detectors' verify plot for one concept: each unit's IoU with the concept (x)
    against the relative change of its mean activation when the concept is blacked out (y),
    with the Pearson r in the title.

    Args:
        points: (unit, IoU, delta) of the units with a finite delta.
        r: the concept row's Pearson correlation (None: undefined).
    """
    columns = ("unit", "IoU", "delta")
    title = f"{concept}: IoU against blackout change, Pearson r = {fmt(r, 3)}"
    if not points:
        return _empty(title, "No unit with a finite change.", columns)
    ious = [p[1] for p in points]
    deltas = [p[2] for p in points]
    x_lo, x_hi = 0.0, max(ious) if max(ious) > 0 else 1.0
    y_lo, y_hi = _axis(min([0.0, *deltas]), max([0.0, *deltas]))
    left, top, w, area = 48.0, 12.0, 220.0, 130.0
    body = [_rect(left, top, w, area, "none", FRAME)]
    zero = _y(0.0, y_lo, y_hi, top, area)
    body.append(_line(left, zero, left + w, zero, "#bbbbbb", ' stroke-dasharray="3 3"'))
    for unit, iou, delta in points:
        cx = left + w * (iou - x_lo) / (x_hi - x_lo)
        cy = _y(delta, y_lo, y_hi, top, area)
        body.append(f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="3" fill="{BAR_COLOR}" '
                    f'fill-opacity="0.7"><title>unit {unit}: IoU {iou:.4f}, delta '
                    f'{delta:.4f}</title></circle>')
    body += [_text(left - 4, top + 8, f"{y_hi:.3g}", TICK_END),
             _text(left - 4, top + area, f"{y_lo:.3g}", TICK_END),
             _text(left, top + area + 14, f"{x_lo:.3g}", TICK),
             _text(left + w, top + area + 14, f"{x_hi:.3g}", TICK_END),
             _text(left + w / 2, top + area + 28, "IoU with the concept", TICK_MID),
             _text(12, top + area / 2, "delta", f' transform="rotate(-90 12 '
                                                f'{_num(top + area / 2)})" {TICK_MID[1:]}')]
    desc = f"{len(points)} units; Pearson r = {fmt(r, 4)}."
    rows = [(u, fmt(i), fmt(d)) for u, i, d in points]
    return Plot(_svg(left + w + 12, top + area + 34, title, desc, body), columns, rows)


def specialization_bars(ranges: Sequence[tuple[int, float, float]]) -> Plot:
    """Per range index, the shares of unspecialized (blue) and weakly specialized (orange,
    lighter) units of the trained job (CCE's ``analyze_activations``).

    Args:
        ranges: (range index, unspecialized share, weakly specialized share).
    """
    columns = ("range", "unspecialized share", "weakly specialized share")
    title = "Unspecialized and weakly specialized units per range"
    if not ranges:
        return _empty(title, "No range with an explanation in this layer.", columns)
    peak = max(max(u, w) for _, u, w in ranges)
    left, top, area, group = 44.0, 14.0, 110.0, 60.0
    hi, width, body = _bar_frame(peak, len(ranges), group)
    for n, (k, unspec, weak) in enumerate(ranges):
        bx = left + n * group + 10
        for j, (v, color) in enumerate(((unspec, BAR_COLOR), (weak, WITHOUT_COLOR))):
            y = _y(v, 0.0, hi, top, area)
            body.append(_rect(bx + 20 * j, y, 18, top + area - y, color,
                              ' fill-opacity="0.7"' if j else ""))
        body.append(_text(bx + 19, top + area + 14, f"range {k}", TICK_MID))
    body += _legend(width + 4, top, [("unspecialized", BAR_COLOR),
                                     ("weakly specialized", WITHOUT_COLOR)])
    desc = "Shares of the layer's units, per range index of the trained job."
    rows = [(k, fmt(u), fmt(w)) for k, u, w in ranges]
    return Plot(_svg(width + 130, top + area + 22, title, desc, body), columns, rows)
