"""The report's plots as inline SVG written here (no JS plotting, report.md §3.5).

Every plot is a :class:`Plot`: the SVG markup (with ``<title>`` and ``<desc>``; no ``xmlns``,
which inline SVG in HTML does not need), and the same numbers as a table that the page puts
in a ``<details>`` under it. An empty input gives an SVG saying so (never an exception: the
NetDissect-Lite report crashed on layers without an interpretable unit). Output depends only on
the input, so two renders are byte-identical. Colours are Okabe-Ito, one per category.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

from ray_dissect.records.schema import LayerSummary, UnitRecord

CATEGORY_ORDER = ("object", "scene", "part", "material", "texture", "color")
CATEGORY_COLORS = {"object": "#0072B2", "scene": "#009E73", "part": "#E69F00",
                   "material": "#CC79A7", "texture": "#D55E00", "color": "#56B4E9"}
OTHER_COLOR = "#7f7f7f"
LINE_COLOR = "#D55E00"
BAR_COLOR = "#0072B2"


@dataclass(frozen=True)
class Plot:
    """An inline SVG plot and its data table.

    Attributes:
        svg: the ``<svg>`` element.
        columns: table header.
        rows: table rows (the plotted numbers).
        empty: True when there was nothing to plot (the SVG says so).
    """

    svg: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[object, ...]] = field(default_factory=list)
    empty: bool = False


def category_color(category: str) -> str:
    """The Okabe-Ito colour of a category (grey for categories outside Broden's six)."""
    return CATEGORY_COLORS.get(category, OTHER_COLOR)


def category_rank(category: str) -> tuple[int, str]:
    """Sort key: Broden's categories in NetDissect-Lite's order, then the others by name."""
    if category in CATEGORY_ORDER:
        return CATEGORY_ORDER.index(category), ""
    return len(CATEGORY_ORDER), category


def _num(x: float) -> str:
    """A coordinate with one decimal (deterministic, compact)."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _svg(width: float, height: float, title: str, desc: str, body: list[str]) -> str:
    head = (f'<svg class="plot" role="img" width="{_num(width)}" height="{_num(height)}" '
            f'viewBox="0 0 {_num(width)} {_num(height)}"><title>{escape(title)}</title>'
            f"<desc>{escape(desc)}</desc>")
    return head + "".join(body) + "</svg>"


def _empty(title: str, message: str, columns: tuple[str, ...]) -> Plot:
    body = [f'<text x="8" y="28" class="empty">{escape(message)}</text>']
    return Plot(_svg(360, 44, title, message, body), columns, [], empty=True)


def _rect(x: float, y: float, w: float, h: float, fill: str, extra: str = "") -> str:
    return (f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" '
            f'fill="{fill}"{extra}/>')


def _text(x: float, y: float, text: str, extra: str = "") -> str:
    return f'<text x="{_num(x)}" y="{_num(y)}"{extra}>{escape(text)}</text>'


def fix(name: str) -> str:
    """NetDissect-Lite's display form of a concept name: ``-s``/``-c`` suffix dropped,
    ``_`` as space."""
    if name.endswith(("-s", "-c")):
        name = name[:-2]
    return name.replace("_", " ")


def _fit(text: str, width: float, char: float = 5.6) -> str:
    """``text`` cut with an ellipsis to about ``width`` px of 10-px bold text."""
    room = max(1, int(width / char))
    return text if len(text) <= room else text[: max(1, room - 1)] + "…"


def concept_groups(records: Sequence[UnitRecord]) -> list[tuple[str, list[tuple[str, int, float]]]]:
    """Interpretable units per label concept, grouped by category.

    Returns:
        [(category, [(concept, units, max IoU), ...]), ...]: categories in
        :func:`category_rank` order; concepts by units, then max IoU (descending), then name.
    """
    units: Counter[tuple[str, str]] = Counter()
    best: dict[tuple[str, str], float] = defaultdict(float)
    for r in records:
        if r.interpretable and r.label is not None:
            key = (r.label.category, r.label.name)
            units[key] += 1
            best[key] = max(best[key], r.label.iou)
    groups: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    for (cat, name), n in units.items():
        groups[cat].append((name, n, best[(cat, name)]))
    return [(cat, sorted(groups[cat], key=lambda t: (-t[1], -t[2], t[0])))
            for cat in sorted(groups, key=category_rank)]


def concept_bars(records: Sequence[UnitRecord], iou_threshold: float) -> Plot:
    """NetDissect-Lite's bar graph: one bar per concept (interpretable units it labels),
    grouped by category behind a band with the group's "N objects" label; bar labels at
    -45 degrees; y ticks at 1, the middle and the maximum."""
    columns = ("category", "concept", "units", "max IoU")
    title = f"Interpretable units per concept (IoU >= {iou_threshold:g})"
    groups = concept_groups(records)
    if not groups:
        return _empty(title, f"No unit reaches IoU {iou_threshold:g}: no concept to plot.",
                      columns)
    bars = [(cat, name, n, iou) for cat, items in groups for name, n, iou in items]
    top = max(b[2] for b in bars)
    bar_w = min(40.0, max(12.0, 600.0 / len(bars)))
    gap, area = bar_w / 4, 100.0
    label_h = 12 + 3.9 * max(len(b[1]) for b in bars)
    left = max(32.0, 3.9 * len(bars[0][1]) - 4)
    width = left + len(bars) * (bar_w + gap) + max(8.0, 6.0 * len(groups[-1][0]) + 20)
    body, x = [], left
    for cat, items in groups:
        span = len(items) * (bar_w + gap)
        name = _fit(f"{cat}s", span)
        band = _rect(x, 20, span - gap, area, category_color(cat), ' fill-opacity="0.12"')
        body.append(band[:-2] + f"><title>{len(items)} {escape(cat)}s</title></rect>")
        body.append(f'<text x="{_num(x + 1)}" y="0" class="group"><tspan x="{_num(x + 1)}" '
                    f'dy="9">{len(items)}</tspan><tspan x="{_num(x + 1)}" dy="9">'
                    f'{escape(name)}</tspan></text>')
        x += span
    for tick in sorted({1, (top + 1) // 2, top}):
        y = 20 + area - area * tick / top
        body.append(_text(left - 4, y + 3, str(tick), ' text-anchor="end" class="tick"'))
    for i, (cat, name, n, _iou) in enumerate(bars):
        bx, h = left + i * (bar_w + gap), area * n / top
        body.append(_rect(bx, 20 + area - h, bar_w, h, category_color(cat),
                          f' class="bar" data-concept="{escape(name)}" data-units="{n}"'))
        lx, ly = bx + bar_w / 2, 20 + area + 6
        body.append(_text(lx, ly, fix(name), f' transform="rotate(-45 {_num(lx)} {_num(ly)})" '
                                             'text-anchor="end" class="label"'))
    desc = f"{len(bars)} concepts in {len(groups)} categories; tallest bar {top} units."
    svg = _svg(width, 20 + area + label_h, title, desc, body)
    return Plot(svg, columns, [(c, nm, n, f"{iou:.4f}") for c, nm, n, iou in bars])


def histogram(values: Sequence[float], bins: int, hi: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """``numpy.histogram`` of ``values`` with ``bins`` bins on [0, hi] (default the max;
    [0, 1] when every value is 0 or there is none)."""
    arr = np.asarray(values, dtype=np.float64)
    top = float(arr.max()) if hi is None and arr.size else (hi or 0.0)
    return np.histogram(arr, bins, (0.0, top if top > 0 else 1.0))


def iou_histogram(records: Sequence[UnitRecord], iou_threshold: float, bins: int = 40) -> Plot:
    """Label IoU of every unit: ``bins`` bins on [0, max], the threshold drawn; the title
    gives mean +- sd (compexp)."""
    ious = [r.label.iou if r.label else 0.0 for r in records]
    columns = ("from", "to", "units")
    if not ious:
        return _empty("Label IoU histogram", "No unit records: nothing to plot.", columns)
    counts, edges = histogram(ious, bins)
    title = f"Label IoU of {len(ious)} units: mean {np.mean(ious):.3f} +- {np.std(ious):.3f}"
    svg = _hist_svg(counts, edges, title, [(iou_threshold, f"threshold {iou_threshold:g}")],
                    "IoU")
    rows = [(f"{a:.4f}", f"{b:.4f}", int(c)) for a, b, c in zip(edges, edges[1:], counts,
                                                               strict=False)]
    return Plot(svg, columns, rows)


def _hist_svg(counts: np.ndarray, edges: np.ndarray, title: str,
              marks: list[tuple[float, str]], xlabel: str) -> str:
    """Bars of a histogram with vertical marked lines (threshold, range bounds)."""
    width, height, left, top_pad, area = 420.0, 150.0, 36.0, 16.0, 100.0
    plot_w = width - left - 10
    peak = max(int(counts.max()) if counts.size else 0, 1)
    lo, hi = float(edges[0]), float(edges[-1])
    scale = plot_w / (hi - lo) if hi > lo else 0.0
    body = [_rect(left, top_pad, plot_w, area, "none", ' stroke="#767676"')]
    bw = plot_w / max(len(counts), 1)
    bars = [f"M{_num(left + i * bw)} {_num(top_pad + area)}v-{_num(area * int(c) / peak)}"
            f"h{_num(max(bw - 0.5, 0.5))}v{_num(area * int(c) / peak)}z"
            for i, c in enumerate(counts) if int(c) > 0]
    if bars:  # one path for all bars: a unit page carries one histogram, keep it small
        body.append(f'<path d="{"".join(bars)}" fill="{BAR_COLOR}"/>')
    for value, label in marks:
        if lo <= value <= hi and scale:
            x = left + (value - lo) * scale
            body.append(f'<line x1="{_num(x)}" y1="{_num(top_pad)}" x2="{_num(x)}" '
                        f'y2="{_num(top_pad + area)}" stroke="{LINE_COLOR}" stroke-width="2" '
                        f'stroke-dasharray="4 2"><title>{escape(label)}</title></line>')
    body += [_text(left - 4, top_pad + 8, str(peak), ' text-anchor="end" class="tick"'),
             _text(left - 4, top_pad + area, "0", ' text-anchor="end" class="tick"'),
             _text(left, top_pad + area + 14, f"{lo:.3g}", ' class="tick"'),
             _text(left + plot_w, top_pad + area + 14, f"{hi:.3g}",
                   ' text-anchor="end" class="tick"'),
             _text(left + plot_w / 2, top_pad + area + 28, xlabel,
                   ' text-anchor="middle" class="tick"')]
    marks_text = "; ".join(f"{label} at {value:.4g}" for value, label in marks)
    desc = f"{int(counts.sum())} values in {len(counts)} bins from {lo:.4g} to {hi:.4g}."
    return _svg(width, height, title, (desc + " " + marks_text).strip(), body)


def activation_histogram(edges: Sequence[float], counts: Sequence[int], zeros: int,
                         marks: list[tuple[float, str]], unit: int) -> Plot:
    """A unit's activation histogram (exact zeros counted apart) with its threshold and
    range bounds marked."""
    columns = ("from", "to", "values")
    title = f"Activations of unit {unit} ({zeros} exact zeros apart)"
    if not edges:
        return _empty(title, "No finite non-zero activation.", columns)
    e, c = np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    rows: list[tuple[object, ...]] = [("0", "0", zeros)]
    rows += [(f"{a:.4g}", f"{b:.4g}", int(n)) for a, b, n in zip(e, e[1:], c, strict=False)]
    return Plot(_hist_svg(c, e, title, marks, "activation"), columns, rows)


def _hbars(items: list[tuple[str, int, str]], title: str, desc: str) -> str:
    """Horizontal bars: (label, value, colour) per row."""
    peak = max((v for _, v, _ in items), default=1) or 1
    left, bar_area, row = 110.0, 220.0, 18.0
    body = []
    for i, (label, value, color) in enumerate(items):
        y = 6 + i * row
        body.append(_text(left - 6, y + 11, label, ' text-anchor="end" class="label"'))
        body.append(_rect(left, y, bar_area * value / peak, row - 5, color))
        body.append(_text(left + bar_area * value / peak + 4, y + 11, str(value),
                          ' class="tick"'))
    return _svg(left + bar_area + 40, 10 + len(items) * row, title, desc, body)


def category_counts(by_category: dict[str, int]) -> Plot:
    """Interpretable units per label category."""
    columns = ("category", "units")
    title = "Interpretable units per category"
    items = [(c, by_category[c], category_color(c)) for c in sorted(by_category, key=category_rank)
             if by_category[c] > 0]
    if not items:
        return _empty(title, "No interpretable unit.", columns)
    svg = _hbars(items, title, ", ".join(f"{c}: {n}" for c, n, _ in items))
    return Plot(svg, columns, [(c, n) for c, n, _ in items])


def explained_ranges(records: Sequence[UnitRecord], iou_threshold: float) -> Plot:
    """Explanations with IoU >= the threshold, by range index."""
    columns = ("range", "explained", "explanations")
    title = f"Explained ranges (IoU >= {iou_threshold:g}) by range index"
    total: Counter[int] = Counter(e.range_index for r in records for e in r.explanations)
    good: Counter[int] = Counter(e.range_index for r in records for e in r.explanations
                                 if e.text is not None and e.iou >= iou_threshold)
    if not total:
        return _empty(title, "No explanation in this layer.", columns)
    items = [(f"range {i}", good[i], BAR_COLOR) for i in sorted(total)]
    svg = _hbars(items, title, ", ".join(f"{lab}: {n}" for lab, n, _ in items))
    return Plot(svg, columns, [(i, good[i], total[i]) for i in sorted(total)])


def _formula_shape(node: object) -> tuple[int, Counter[str]]:
    """(number of concepts, operator counts) of a recorded formula tree."""
    op = getattr(node, "op", None)
    if op == "leaf":
        return 1, Counter()
    if op == "not":
        n, ops = _formula_shape(getattr(node, "child"))  # noqa: B009
        return n, ops + Counter({"NOT": 1})
    a, oa = _formula_shape(getattr(node, "left"))  # noqa: B009
    b, ob = _formula_shape(getattr(node, "right"))  # noqa: B009
    return a + b, oa + ob + Counter({str(op).upper(): 1})


def formula_shape(node: object) -> tuple[int, dict[str, int]]:
    """(length = number of concepts, {operator: count}) of a recorded formula (or None)."""
    if node is None:
        return 0, {}
    n, ops = _formula_shape(node)
    return n, dict(ops)


def formula_stats(records: Sequence[UnitRecord]) -> Plot:
    """Formula lengths and operator counts over a layer's explanations."""
    columns = ("what", "count")
    title = "Formula lengths and operators"
    lengths: Counter[int] = Counter()
    ops: Counter[str] = Counter()
    for r in records:
        for e in r.explanations:
            if e.formula is not None:
                n, o = formula_shape(e.formula)
                lengths[n] += 1
                ops.update(o)
    if not lengths:
        return _empty(title, "No formula in this layer.", columns)
    items = [(f"length {n}", lengths[n], BAR_COLOR) for n in sorted(lengths)]
    items += [(op, ops[op], OTHER_COLOR) for op in ("AND", "OR", "NOT") if ops[op]]
    svg = _hbars(items, title, ", ".join(f"{lab}: {n}" for lab, n, _ in items))
    return Plot(svg, columns, [(lab, n) for lab, n, _ in items])


def layer_stacks(layers: Sequence[LayerSummary], unique: dict[str, dict[str, int]]) -> Plot:
    """Across layers: interpretable units (left bar) and unique concepts (right bar) per
    layer, stacked by category (NetDissect's ``plot_semantics`` figure).

    Args:
        unique: per layer, unique label concepts per category.
    """
    columns = ("layer", "category", "units", "unique concepts")
    title = "Interpretable units and unique concepts per layer, by category"
    cats = sorted({c for s in layers for c in s.by_category} |
                  {c for u in unique.values() for c in u}, key=category_rank)
    peak = max([s.interpretable for s in layers] +
               [sum(unique.get(s.layer, {}).values()) for s in layers] + [0])
    if not layers or peak == 0:
        return _empty(title, "No interpretable unit in any layer.", columns)
    area, left, group = 120.0, 36.0, 64.0
    body = [_text(left - 4, 20, str(peak), ' text-anchor="end" class="tick"'),
            _text(left - 4, 16 + area, "0", ' text-anchor="end" class="tick"')]
    rows: list[tuple[object, ...]] = []
    for i, s in enumerate(layers):
        x = left + i * group + 6
        for j, counts in enumerate((s.by_category, unique.get(s.layer, {}))):
            y = 16 + area
            for c in cats:
                h = area * counts.get(c, 0) / peak
                if h:
                    hatch = ' fill-opacity="0.55"' if j else ""
                    body.append(_rect(x + j * 24, y - h, 22, h, category_color(c), hatch))
                    y -= h
        body.append(_text(x + 23, 30 + area, _short(s.layer), ' text-anchor="middle" '
                                                               'class="label"'))
        rows += [(s.layer, c, s.by_category.get(c, 0), unique.get(s.layer, {}).get(c, 0))
                 for c in cats]
    legend = [_rect(left + len(layers) * group + 10, 16 + k * 16, 10, 10, category_color(c))
              + _text(left + len(layers) * group + 24, 25 + k * 16, c, ' class="label"')
              for k, c in enumerate(cats)]
    width = left + len(layers) * group + 110
    desc = "Per layer: left bar interpretable units, right (lighter) bar unique concepts."
    return Plot(_svg(width, max(40 + area, 24 + 16 * len(cats)), title, desc, body + legend),
                columns, rows)


def _short(layer: str) -> str:
    return layer if len(layer) <= 10 else "…" + layer[-9:]
