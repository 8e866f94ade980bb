"""The page builders: template contexts per page, from records and rendered tiles.

Each ``*_context`` returns the variables its template in ``templates/`` needs; :class:`Site`
renders a template and writes it through :mod:`ray_dissect.storage`. Pages link with relative
URLs only (``prefix`` is the way back to the report root), so the site opens from ``file://``.
A stage adds a page of its own with a :class:`ReportPage` (its nav entry and its writer); the
report receives them as data (:func:`ray_dissect.report.build.build_report`'s ``pages``).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import quote

from markupsafe import Markup

from ray_dissect import storage
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report import plots
from ray_dissect.report.catalog import provenance
from ray_dissect.report.meta import ReportOptions, UnitTiles
from ray_dissect.report.tiles import TileStyle
from ray_dissect.report.views import (
    Card,
    card,
    certificate_text,
    chip,
    fix,
    fmt_range,
    formula_tree,
    header_counts,
    header_line,
    url_key,
)
from ray_dissect.results.job import METRIC_NAMES, JobResults
from ray_dissect.spec import NetDissectMethod
from ray_dissect.spec.units import RandomUnits, UnitsSpec
from ray_dissect.storage import AnyPath

Nav = dict[str, list[tuple[str, str]]]
"""The stages' pages a report links, per nav line (``main``, ``stages``): (href, title)."""
PAGE_CARDS = 100
SORT_KEYS = (("unit", "unit"), ("iou", "label IoU"), ("label", "label (category, count, IoU)"),
             ("best", "best range IoU"), ("len", "formula length"), ("px", "mask pixels"),
             ("act", "activation coverage"), ("det", "detection accuracy"),
             ("samp", "samples coverage"), ("expl", "explanation coverage"),
             ("cm", "concept masking"), ("gap", "gap to optimal (largest range)"))


@lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja environment over the package's templates (autoescaped; built and its
    templates compiled once per process)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("ray_dissect.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["basename"] = lambda path: quote(posixpath.basename(path))
    env.filters["fixname"] = fix
    return env


class Site:
    """Writes the report's files under ``out`` (one writer per file, whole-file writes)."""

    def __init__(self, out: AnyPath, common: dict[str, Any]) -> None:
        self.out, self.env = out, environment()
        footer = Markup('<dl class="prov">') + Markup("").join(
            Markup("<dt>{}</dt><dd>{}</dd>").format(k, v) for k, v in common["provenance"])
        self.common = {**common, "footer": footer + Markup("</dl>")}
        self.pages = 0

    def write(self, rel: str, text: str) -> AnyPath:
        path = self.out / rel
        storage.makedirs(path.parent)
        storage.write_text(path, text)
        return path

    def page(self, rel: str, template: str, **ctx: Any) -> AnyPath:
        """Render ``template`` to ``rel``; ``prefix`` is derived from the depth of ``rel``."""
        depth = rel.count("/")
        prefix = "/".join([".."] * depth) if depth else "."
        html = self.env.get_template(template).render(**{**self.common, "prefix": prefix, **ctx})
        self.pages += 1
        return self.write(rel, html)

    def asset(self, name: str) -> None:
        """Copy ``templates/assets/<name>`` to ``assets/<name>``."""
        from importlib.resources import files

        text = files("ray_dissect.report").joinpath("templates", "assets", name).read_text()
        self.write(f"assets/{name}", text)


@dataclass(frozen=True, kw_only=True)
class ReportPage:
    """A page a stage adds to the report.

    Attributes:
        href: the page's file, from the report root (e.g. ``"prism.html"``).
        title: its link text in the nav.
        line: where the nav lists it: ``"main"`` beside the job's own pages (before
            ``about``), ``"stages"`` on the line after them.
        present: whether the job has what the page shows (else no link, no page).
        write: writes the page (and its files) with the report's :class:`Site`.
    """

    href: str
    title: str
    line: Literal["main", "stages"]
    present: Callable[[JobResults], bool]
    write: Callable[[Site, JobResults], None]


def nav_links(shown: Sequence[ReportPage]) -> Nav:
    """Per nav line, (href, title) of the pages ``shown``, in their order."""
    return {line: [(p.href, p.title) for p in shown if p.line == line]
            for line in ("main", "stages")}


def layer_cards(results: JobResults, layer: str, tiles: dict[int, UnitTiles],
                prefix: str = "..") -> list[Card]:
    """The cards of every unit of a layer, in unit order."""
    t, kind = results.iou_threshold, results.spec.method.kind
    return [card(r, t, tiles.get(r.unit), prefix, kind) for r in results.records(layer)]


def layer_data_js(layer: str, cards: list[Card], threshold: float) -> str:
    """``data/<layer>.js``: one plain-script call handing the grid its units."""
    data = {"threshold": threshold, "units": [c.js for c in cards],
            "concepts": any(c.best is not None for c in cards),
            "colors": {c.category: c.color for c in cards if c.category}}
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    text = text.replace("</", "<\\/")
    return f"window.RD.add({json.dumps(layer)}, {text});\n"


def units_text(units: UnitsSpec, records: list[UnitRecord]) -> str | None:
    """What the layer page says of the job's ``units:`` (None for ``all``)."""
    if units == "all":
        return None
    shown = ", ".join(str(r.unit) for r in records[:12]) + (", ..." if len(records) > 12 else "")
    rule = (f"{units.random} drawn with seed {units.seed}" if isinstance(units, RandomUnits)
            else "a list")
    return f"the job dissects {len(records)} chosen units ({rule}): {shown}"


def metrics_table(results: JobResults, layer: str
                  ) -> tuple[list[str], list[list[str]]] | None:
    """CCE's ``compute_metrics`` means per range of the layer (:meth:`JobResults.range_metrics`)
    as (header, rows of printed cells); metric columns no range has are left out; None
    without explanations."""
    rows = results.range_metrics(layer)
    if not rows:
        return None
    names = [m for m in METRIC_NAMES if any(r[m] is not None for r in rows)]
    header = ["range", "units", "explained", "mean IoU", "mean visited",
              *(f"mean {m.replace('_', ' ')}" for m in names)]
    body = [[str(r["range_index"]), str(r["ranges"]), str(r["explained"]), f"{r['iou']:.4f}",
             f"{r['visited']:.1f}", *("-" if r[m] is None else f"{r[m]:.4f}" for m in names)]
            for r in rows]
    return header, body


def layer_context(results: JobResults, layer: str, cards: list[Card]) -> dict[str, Any]:
    """Variables of ``layer.html``."""
    records, t = results.records(layer), results.iou_threshold
    concepts = results.spec.method.kind != "none"  # method none: no concept furniture
    k, n, m = header_counts(records)
    shape = results.feature_shape(layer)
    explained = [e for r in records for e in r.explanations]
    return {
        "layer": layer, "key": url_key(layer), "header": header_line(records, t), "k": k,
        "n_units": n, "m": m, "threshold": t,
        "shape": " x ".join(map(str, shape)) if shape else "unknown",
        "chosen": units_text(results.spec.units, records),
        "quantile": results.quantile_text, "method": results.spec.method.kind,
        "bars": plots.concept_bars(records, t), "hist": plots.iou_histogram(records, t),
        "cats": plots.category_counts(results.layer_summary(layer).by_category),
        "compositional": bool(explained), "range_metrics": metrics_table(results, layer),
        "ranges": plots.explained_ranges(records, t), "formulas": plots.formula_stats(records),
        "first_page": cards[:PAGE_CARDS], "cards": cards, "concepts": concepts,
        "sort_keys": SORT_KEYS if concepts else SORT_KEYS[:1],
        "categories": sorted({c.category for c in cards if c.category}, key=plots.category_rank),
        "slider_max": f"{max([1.0] + [c.iou for c in cards]):.2f}",
        "lengths": sorted({r.length for c in cards for r in c.ranges if r.length}),
        "range_indices": sorted({e.range_index for e in explained}),
    }


def _marks(rec: UnitRecord) -> list[tuple[float, str]]:
    marks = [] if rec.threshold is None else [(rec.threshold, "threshold")]
    for e in rec.explanations:
        marks.append((e.lo, f"range {e.range_index} lo"))
        if e.hi is not None:
            marks.append((e.hi, f"range {e.range_index} hi"))
    return marks


def _metrics(e: Any) -> list[tuple[str, str]]:
    if e.metrics is None:
        return []
    m = e.metrics.model_dump()
    return [(k.replace("_", " "), f"{m[k]:.4f}") for k in METRIC_NAMES if m.get(k) is not None]


def common_context(results: JobResults, options: ReportOptions, style: TileStyle,
                   nav: Nav) -> dict[str, Any]:
    """What every page's frame shows: job name, missing layers, the provenance footer and
    the stages' pages the nav links (``nav``: :func:`nav_links`)."""
    return {"job_name": results.spec.name, "missing": results.missing_layers(),
            "provenance": provenance(results, options.describe(style)), "page_kind": "page",
            "nav": nav}


def per_image_text(results: JobResults) -> str | None:
    """How a ``threshold: per_image`` job thresholds (None for the dataset quantile)."""
    q = image_quantile(results)
    return None if q is None else f"per image (each image's own {1 - q:g} quantile)"


def image_quantile(results: JobResults) -> float | None:
    """q of a ``threshold: per_image`` job (masks above each image's 1 - q quantile)."""
    method = results.spec.method
    return method.quantile if isinstance(method, NetDissectMethod) and \
        method.threshold == "per_image" else None


def unit_context(results: JobResults, rec: UnitRecord, tiles: UnitTiles | None,
                 neighbours: tuple[str | None, str | None], classes: list[tuple[int, float, str]]
                 ) -> dict[str, Any]:
    """Variables of ``unit.html`` (``neighbours``: prev and next unit pages, relative;
    ``classes``: the classes the unit feeds most, (class, weight, name))."""
    rows = tiles.rows if tiles else []
    h = tiles.histogram if tiles else None
    hist = plots.activation_histogram(h.edges if h else [], h.counts if h else [],
                                      h.zeros if h else 0, _marks(rec), rec.unit)
    return {
        "layer": rec.layer, "layer_href": f"../../layers/{url_key(rec.layer)}.html",
        "rec": rec, "label": fix(rec.label.name) if rec.label else "",
        "chip": chip(rec.label.category) if rec.label else "",
        "threshold": results.iou_threshold,
        "concepts": results.spec.method.kind != "none",
        "per_category": sorted(rec.per_category.items(),
                               key=lambda kv: plots.category_rank(kv[0])),
        "hist": hist, "rows": rows, "top_row": next((r for r in rows if r.kind == "top"), None),
        "explanations": [{"e": e, "bounds": fmt_range(e), "tree": formula_tree(e.formula),
                          "metrics": _metrics(e), "certificate": certificate_text(e),
                          "rows": [r for r in rows if r.range_index == e.range_index]}
                         for e in rec.explanations],
        "prev": neighbours[0], "next": neighbours[1],
        "per_image_threshold": per_image_text(results),
        "classes": classes,
        "raw": raw_json(rec),
    }


def raw_json(rec: UnitRecord) -> Markup:
    """The record as compact JSON for a ``<pre>``: only ``&``, ``<``, ``>`` escaped (quotes
    need none in text), so the page's raw record costs what the JSON does."""
    text = rec.model_dump_json()
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def formulas_table(results: JobResults) -> list[tuple[str, str, str]]:
    """Per layer: the most frequent formulas and the best one by IoU (compositional jobs)."""
    out = []
    for layer in results.layers:
        s = results.layer_summary(layer)
        frequent = ", ".join(f"{f.text} ({f.ranges})" for f in s.top_formulas[:5])
        best = results.best_explanations(layer, 1)
        best_text = (f"{best[0][1].text} (unit {best[0][0]}, r{best[0][1].range_index}, "
                     f"IoU {best[0][1].iou:.3f})" if best else "")
        if frequent or best_text:
            out.append((layer, frequent, best_text))
    return out


def identical_layers(results: JobResults) -> list[str]:
    """Groups of layers whose records say the same (NetDissect-Lite#17: a sign of a wrong
    hook), as "a = b" strings."""
    seen: dict[str, list[str]] = {}
    for layer in results.layers:
        recs = results.records(layer)
        if not recs:
            continue
        key = json.dumps([[r.threshold, r.label.name if r.label else None,
                           r.label.iou if r.label else None, r.mask_pixels] for r in recs])
        seen.setdefault(key, []).append(layer)
    return [" = ".join(group) for group in seen.values() if len(group) > 1]


def sprite_links(cards: Sequence[Card]) -> dict[int, tuple[str, int, int] | None]:
    """Per unit its sprite (src, width, height) as seen from the report root."""
    out: dict[int, tuple[str, int, int] | None] = {}
    for c in cards:
        out[c.unit] = ((c.sprite.removeprefix("../"), c.sprite_width, c.sprite_height)
                       if c.sprite else None)
    return out
