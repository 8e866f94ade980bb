"""What the pages show, computed from records (no HTML here beyond small fragments).

The unit card (report.md §3.3), the layer header ("k/U units covering m concepts with IoU >=
t", NetDissect-Lite's wording), the per-unit data the grid script sorts and filters, and the
formula tree. Layer keys in URLs are percent-quoted once more (a ``%`` of a layer key names a
file, so the link spells it ``%25``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

from ray_dissect.job.layout import layer_key
from ray_dissect.records.schema import Explanation, UnitRecord
from ray_dissect.report.meta import UnitTiles
from ray_dissect.report.plots import category_color, category_rank, fix, formula_shape
from ray_dissect.results.job import METRIC_NAMES, best_iou

METRIC_SHORT = {"activation_coverage": "act", "detection_accuracy": "det",
                "samples_coverage": "samp", "explanation_coverage": "expl",
                "concept_masking": "cm"}


def url_key(layer: str) -> str:
    """The layer's file name stem as it appears in a relative URL."""
    return quote(layer_key(layer), safe="")


def fmt_bound(x: float | None) -> str:
    """A range bound with 3 significant digits (``+inf`` for None)."""
    return "+inf" if x is None or not math.isfinite(x) else f"{x:.3g}"


def fmt_range(e: Explanation) -> str:
    """``[lo, hi]`` when inclusive, ``(lo, hi)`` when strict."""
    a, b = ("[", "]") if e.inclusive else ("(", ")")
    return f"{a}{fmt_bound(e.lo)}, {fmt_bound(e.hi)}{b}"


def header_counts(records: list[UnitRecord]) -> tuple[int, int, int]:
    """(interpretable units k, units U, unique label concepts m of the interpretable)."""
    good = [r for r in records if r.interpretable and r.label is not None]
    return len(good), len(records), len({(r.label.name, r.label.category)
                                         for r in good if r.label})


def header_line(records: list[UnitRecord], iou_threshold: float) -> str:
    """NetDissect-Lite's layer header: ``k/U units covering m concepts with IoU >= t``."""
    k, u, m = header_counts(records)
    return f"{k}/{u} units covering {m} concepts with IoU \u2265 {iou_threshold:.2f}"


def leaf_names(node: Any) -> list[str]:
    """The concept names of a recorded formula's leaves, left to right."""
    if node is None:
        return []
    if node.op == "leaf":
        return [node.name]
    if node.op == "not":
        return leaf_names(node.child)
    return leaf_names(node.left) + leaf_names(node.right)


def search_terms(rec: UnitRecord) -> list[str]:
    """What a search matches: label, ``per_category``, ``top`` and formula leaves, in
    lower case with ``_`` as space, unique, in that order."""
    names = [rec.label.name] if rec.label else []
    names += [c.name for c in rec.per_category.values() if c.iou > 0]
    names += [c.name for c in rec.top]
    for e in rec.explanations:
        names += leaf_names(e.formula)
    return list(dict.fromkeys(n.lower().replace("_", " ") for n in names))


def best_explanation(rec: UnitRecord) -> Explanation | None:
    """The record's explanation with the highest IoU (lowest range on ties)."""
    found = [e for e in rec.explanations if e.text is not None]
    return max(found, key=lambda e: (e.iou, -e.range_index)) if found else None


@dataclass(frozen=True)
class RangeLine:
    """One line of a card: ``r2 [1.84, 3.1] (water OR river) AND NOT blue · 0.12``."""

    index: int
    bounds: str
    text: str
    iou: float
    length: int
    ops: tuple[str, ...]
    chips: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Card:
    """A unit card and the data the grid script needs (``js``)."""

    layer: str
    unit: int
    label: str
    category: str
    color: str
    iou: float
    interpretable: bool
    threshold: float
    href: str | None
    sprite: str | None
    sprite_width: int
    sprite_height: int
    ranges: tuple[RangeLine, ...]
    best: float | None = None
    js: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> bool | None:
        """Whether the unit passes by the IoU its method judges it by (``best``, the
        results' ``best_iou``): the badge and greying; None for method none (no badge)."""
        return None if self.best is None else self.best >= self.threshold

    @property
    def iou_attr(self) -> str:
        """``data-iou``: the label IoU with 6 decimals (the script writes the same)."""
        return f"{self.iou:.6f}"

    @property
    def alt(self) -> str:
        """Alt text of the sprite: what its rows are."""
        rows = ", ".join(f"r{r.index} {r.text}" for r in self.ranges) or "top activations"
        return f"unit {self.unit} tiles: {rows}"


def _chips(e: Explanation) -> tuple[tuple[str, str, str], ...]:
    if e.metrics is None:
        return ()
    m = e.metrics.model_dump()
    return tuple((METRIC_SHORT[k], f"{m[k]:.2f}", k.replace("_", " "))
                 for k in ("activation_coverage", "explanation_coverage") if m.get(k) is not None)


def range_line(e: Explanation) -> RangeLine:
    """The card line of one explanation."""
    n, ops = formula_shape(e.formula)
    return RangeLine(e.range_index, fmt_range(e), e.text or "(no formula)", e.iou, n,
                     tuple(sorted(ops)), _chips(e))


def card(rec: UnitRecord, threshold: float, tiles: UnitTiles | None, prefix: str = "..",
         method: str = "netdissect") -> Card:
    """The card of a unit of a ``method`` job, for a page ``prefix`` away from the report
    root."""
    key = url_key(rec.layer)
    page = tiles is None or tiles.page
    lines = tuple(range_line(e) for e in rec.explanations)
    sprite = f"{prefix}/{quote(tiles.sprite)}" if tiles and tiles.sprite else None
    c = Card(layer=rec.layer, unit=rec.unit, label=fix(rec.label.name) if rec.label else "",
             category=rec.label.category if rec.label else "",
             color=category_color(rec.label.category) if rec.label else "#767676",
             iou=rec.label.iou if rec.label else 0.0, interpretable=rec.interpretable,
             threshold=threshold, href=f"{prefix}/units/{key}/{rec.unit}.html" if page else None,
             sprite=sprite, sprite_width=tiles.sprite_width if tiles else 0,
             sprite_height=tiles.sprite_height if tiles else 0, ranges=lines,
             best=None if method == "none" else best_iou(rec, method))
    return Card(**{**c.__dict__, "js": _js(rec, c)})


def _js(rec: UnitRecord, c: Card) -> dict[str, Any]:
    """The compact per-unit data of ``data/<layer>.js`` (about 0.5 KB a unit)."""
    best = best_explanation(rec)
    metrics = best.metrics.model_dump() if best and best.metrics else {}
    return {
        "u": rec.unit, "l": c.label, "c": c.category, "i": round(c.iou, 6),
        "ok": int(rec.interpretable), "j": None if c.best is None else round(c.best, 6),
        "q": search_terms(rec), "px": rec.mask_pixels,
        "h": c.href, "s": [c.sprite, c.sprite_width, c.sprite_height] if c.sprite else None,
        "b": round(best.iou, 6) if best else None,
        "n": max((r.length for r in c.ranges), default=0),
        "m": {METRIC_SHORT[k]: round(v, 6) for k, v in metrics.items()
              if k in METRIC_NAMES and v is not None},
        "r": [[r.index, r.bounds, r.text, round(r.iou, 6), r.length, list(r.ops),
               [list(ch) for ch in r.chips]] for r in c.ranges],
        "cr": category_rank(c.category)[0] if c.category else 99,
        "g": optimality_gap(rec),
    }


def optimality_gap(rec: UnitRecord) -> float | None:
    """The largest ``upper_bound - iou`` of the unit's certified explanations (0: all proved
    optimal); None when no explanation carries a certificate."""
    gaps = [max(0.0, e.certificate.upper_bound - e.iou) for e in rec.explanations
            if e.certificate is not None]
    return round(max(gaps), 6) if gaps else None


def certificate_text(e: Explanation) -> str:
    """``optimal`` or ``within 0.0123 of optimal`` (empty without a certificate)."""
    cert = e.certificate
    if cert is None:
        return ""
    gap = max(0.0, cert.upper_bound - e.iou)
    return "optimal" if cert.optimal or gap == 0 else f"within {gap:.4f} of optimal"


def formula_tree(node: Any) -> Markup:
    """A recorded formula as a nested ``<ul>`` (operators as list items)."""
    if node is None:
        return Markup("")
    return Markup('<ul class="tree">') + _tree_item(node) + Markup("</ul>")


def _tree_item(node: Any) -> Markup:
    if node.op == "leaf":
        return Markup("<li><span class=\"leaf\">{}</span></li>").format(node.name)
    kids = [node.child] if node.op == "not" else [node.left, node.right]
    inner = Markup("").join(_tree_item(k) for k in kids)
    return Markup("<li><span class=\"op\">{}</span><ul>{}</ul></li>").format(
        node.op.upper(), inner)


def chip(category: str) -> Markup:
    """A category chip: colour swatch and the category's name (not colour alone)."""
    if not category:
        return Markup("")
    return Markup('<span class="chip" style="--c:{}">{}</span>').format(
        category_color(category), escape(category))
