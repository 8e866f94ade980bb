"""Cross-unit views: provenance, the layer table, the concept index and its gallery, classes by
head weight.

The classes page (compexp's ``final.html``) needs the weights of the model's linear head,
``model.classifier`` in the spec: the model is built (never run) and the module's ``weight``
(classes x units) read. They rank the units of the last dissected layer; when the head's input
size is not that layer's unit count, or no classifier is named, the page says so.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect.errors import RayDissectError
from ray_dissect.records.schema import SCHEMA_VERSION, UnitRecord
from ray_dissect.report.meta import UnitTiles
from ray_dissect.report.views import Card, best_explanation, fix, leaf_names, url_key
from ray_dissect.results import JobResults

log = logging.getLogger(__name__)


def method_params(results: JobResults) -> list[tuple[str, str]]:
    """The method's name and the parameters that shape its results."""
    m = results.spec.method
    out = [("method", m.kind), ("quantile", results.quantile_text),
           ("iou_threshold", f"{results.iou_threshold:g}"), ("denominator", results.denominator)]
    for name in ("clusters", "length", "beam", "bounds"):
        if hasattr(m, name):
            out.append((name, str(getattr(m, name))))
    return out


def provenance(results: JobResults, options: dict[str, str]) -> list[tuple[str, str]]:
    """The footer of every page: job, hashes, versions, method, images, report options."""
    s = results.summary
    prov = s.provenance if s else None
    out = [("job", results.spec.name), ("spec_hash", results.spec.spec_hash()),
           ("package_version", prov.package_version if prov else "?"),
           ("schema_version", str(s.schema_version if s else SCHEMA_VERSION))]
    out += method_params(results)
    if s is not None:
        out.append(("images", f"{s.valid_images} valid / {s.images}, {s.bad_samples} bad"))
    else:
        out.append(("images", "unknown (job not finished)"))
    out += [(f"report {k}", v) for k, v in options.items()]
    return out


@dataclass(frozen=True)
class LayerRow:
    """One row of the index's layer table."""

    layer: str
    href: str
    units: int
    interpretable: int
    unique_concepts: int
    explained_ranges: int
    shape: str
    has_records: bool

    @property
    def percent(self) -> str:
        return f"{100 * self.interpretable / self.units:.1f} %" if self.units else "-"


def layer_rows(results: JobResults) -> list[LayerRow]:
    """The index's table: per layer, units, interpretable, concepts, ranges, map shape."""
    rows = []
    for layer in results.layers:
        s = results.layer_summary(layer)
        shape = results.feature_shape(layer)
        rows.append(LayerRow(layer, f"layers/{url_key(layer)}.html", s.units, s.interpretable,
                             s.unique_concepts, s.explained_ranges,
                             " x ".join(map(str, shape)) if shape else "-",
                             results.has_records(layer)))
    return rows


def unique_by_category(records: list[UnitRecord]) -> dict[str, int]:
    """Unique label concepts of the interpretable units, per category."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.interpretable and r.label is not None:
            seen[r.label.category].add(r.label.name)
    return {c: len(v) for c, v in seen.items()}


@dataclass(frozen=True)
class ConceptEntry:
    """A unit detecting a concept, as its label or as a leaf of a range's formula."""

    name: str
    category: str
    layer: str
    unit: int
    role: str
    iou: float
    href: str | None


def concept_entries(results: JobResults, pages: dict[tuple[str, int], bool]
                    ) -> list[ConceptEntry]:
    """Every (concept, unit) whose label or range formula passes the IoU threshold.

    Args:
        pages: (layer, unit) -> whether the unit has a page (links only to those).

    Returns:
        entries sorted by concept name, then IoU descending, then layer and unit.
    """
    t = results.iou_threshold
    category = {c.name: c.category for layer in results.layers for r in results.records(layer)
                for c in [*r.per_category.values(), *r.top]}
    out = []
    for layer in results.layers:
        for r in results.records(layer):
            href = (f"units/{url_key(layer)}/{r.unit}.html"
                    if pages.get((layer, r.unit), True) else None)
            if r.label is not None and r.label.iou >= t:
                out.append(ConceptEntry(fix(r.label.name), r.label.category, layer, r.unit,
                                        "label", r.label.iou, href))
            for e in r.explanations:
                if e.text is None or e.iou < t:
                    continue
                for name in dict.fromkeys(leaf_names(e.formula)):
                    out.append(ConceptEntry(fix(name), category.get(name, ""), layer, r.unit,
                                            f"range {e.range_index}", e.iou, href))
    return sorted(out, key=lambda c: (c.name, -c.iou, c.layer, c.unit, c.role))


def unit_concepts(rec: UnitRecord, method: str) -> dict[str, tuple[float, int | None]]:
    """The concepts a unit is credited with by its method's rule, the gallery's ranking.

    ``netdissect``: its label, at the label's IoU. ``compositional``/``clustered``: every leaf
    of a range's formula, at the best IoU among the formulas holding it (ties to the lower
    range). ``none``: nothing.

    Returns:
        raw concept name -> (IoU, range index; None for the label).
    """
    if method == "netdissect":
        return {rec.label.name: (rec.label.iou, None)} if rec.label else {}
    out: dict[str, tuple[float, int | None]] = {}
    if method == "none":
        return out
    for e in sorted(rec.explanations, key=lambda e: e.range_index):
        for name in leaf_names(e.formula) if e.text is not None else []:
            if name not in out or e.iou > out[name][0]:
                out[name] = (e.iou, e.range_index)
    return out


@dataclass(frozen=True)
class GalleryUnit:
    """One unit of a concept's gallery: its card's sprite, cut to the row that shows the
    concept (``row``: the sprite row; None when the sprite has no such row)."""

    layer: str
    unit: int
    iou: float
    role: str
    href: str | None
    sprite: str | None
    width: int
    height: int
    row: int | None


def _role(rec: UnitRecord, ri: int | None) -> str:
    """``label`` or ``range 2: a OR b`` (the formula that credits the concept)."""
    if ri is None:
        return "label"
    text = next((e.text for e in rec.explanations if e.range_index == ri), None)
    return f"range {ri}: {text}" if text else f"range {ri}"


def _gallery_unit(card: Card, tiles: UnitTiles | None, iou: float, ri: int | None,
                  role: str) -> GalleryUnit:
    key = "top" if ri is None else f"r{ri}"
    rows = tiles.sprite_rows if tiles else []
    return GalleryUnit(card.layer, card.unit, iou, role,
                       card.href.removeprefix("../") if card.href else None,
                       card.sprite.removeprefix("../") if card.sprite else None,
                       card.sprite_width, card.sprite_height,
                       rows.index(key) if key in rows else None)


def concept_gallery(results: JobResults, cards: dict[str, list[Card]],
                    tiles: dict[str, dict[int, UnitTiles]], k: int = 5
                    ) -> list[tuple[str, list[GalleryUnit]]]:
    """Per concept (by name) its ``k`` best units at IoU >= the job's threshold, by
    :func:`unit_concepts`; ties to the lower layer (spec order), then the lower unit."""
    found: dict[str, list[tuple[float, int, int, int | None, str]]] = defaultdict(list)
    for li, layer in enumerate(results.layers):
        for rec in results.records(layer):
            for name, (iou, ri) in unit_concepts(rec, results.spec.method.kind).items():
                if iou >= results.iou_threshold:
                    found[name].append((-iou, li, rec.unit, ri, _role(rec, ri)))
    by_unit = {(layer, c.unit): c for layer in cards for c in cards[layer]}
    out = []
    for name in sorted(found, key=lambda n: (fix(n), n)):
        best = sorted(found[name], key=lambda f: f[:3])[:k]
        out.append((fix(name), [
            _gallery_unit(by_unit[(layer, u)], tiles[layer].get(u), -iou, ri, role)
            for iou, li, u, ri, role in best for layer in [results.layers[li]]]))
    return out


def head_weights(results: JobResults) -> tuple[np.ndarray | None, str]:
    """The classifier's (classes, units) weights for the last layer, or None and why not."""
    name = results.spec.model.classifier
    if name is None:
        return None, ("The spec names no classifier (model.classifier, e.g. '_fc'): "
                      "no class weights to show.")
    try:
        from ray_dissect.models.build import build_model

        modules = dict(build_model(results.spec.model).named_modules())
    except RayDissectError as err:
        return None, f"The model could not be built to read its classifier: {err}"
    weight = getattr(modules.get(name), "weight", None)
    if weight is None or weight.ndim != 2:
        return None, f"model.classifier {name!r} is not a linear module of the model."
    w = weight.detach().double().numpy()
    units = results.feature_shape(results.layers[-1])
    if units is None or w.shape[1] != units[0]:
        return None, (f"The classifier {name!r} takes {w.shape[1]} inputs, the last dissected "
                      f"layer {results.layers[-1]!r} has {units[0] if units else '?'} units.")
    return w, ""


@dataclass(frozen=True)
class ClassUnit:
    """A unit feeding a class: its weight, label and best formula."""

    unit: int
    weight: float
    label: str
    formula: str


def _class_unit(records: dict[int, UnitRecord], unit: int, weight: float) -> ClassUnit:
    rec = records.get(unit)
    label = fix(rec.label.name) if rec and rec.label else ""
    best = best_explanation(rec) if rec else None
    return ClassUnit(unit, weight, label, best.text or "" if best else "")


def class_table(weights: np.ndarray, records: list[UnitRecord], n: int = 10
                ) -> list[tuple[int, list[ClassUnit], list[ClassUnit]]]:
    """Per class: the ``n`` units with the largest weights and the ``n`` with the smallest.

    Ties go to the lower unit.
    """
    by_unit = {r.unit: r for r in records}
    out = []
    for c, row in enumerate(weights):
        order = np.lexsort((np.arange(row.size), -row))
        low = np.lexsort((np.arange(row.size), row))
        out.append((c, [_class_unit(by_unit, int(u), float(row[u])) for u in order[:n]],
                    [_class_unit(by_unit, int(u), float(row[u])) for u in low[:n]]))
    return out


def unit_classes(weights: np.ndarray | None, unit: int, names: Sequence[str] = (), n: int = 5
                 ) -> list[tuple[int, float, str]]:
    """The classes a unit of the last layer feeds most: (class, weight, name), largest first;
    ``names``: the head's class names (empty: each name is "")."""
    if weights is None:
        return []
    col = weights[:, unit]
    order = np.lexsort((np.arange(col.size), -col))[:n]
    return [(int(c), float(col[c]), names[c] if c < len(names) else "") for c in order]


def size_estimate(results: JobResults, rows: int, tiles: int, tile: int, thumb: int,
                  overlay: bool = False) -> int:
    """Rough bytes of the report before it is built: per unit a sprite, its page and data,
    and either three baked JPEG strips per row (about 0.08 bytes per pixel per channel) or,
    with ``overlay``, its overlays (~0.02 bytes per pixel, heat ~0.1 KB a row) over the shared
    images (each image the records show, once, ~0.06 bytes per pixel per channel): rates
    measured on the demo."""
    units = sum(len(results.records(layer)) for layer in results.layers)
    if not overlay:
        return int(units * (rows * min(tiles, 5) * thumb * thumb * 3 * 0.08
                            + 3 * rows * tiles * tile * tile * 3 * 0.08 + 12_000))
    shown = {t.index for layer in results.layers for r in results.records(layer)
             for t in [*(r.top_images or []), *(t for e in r.explanations
                                                for t in _images_of(e))]}
    shared = len(shown) * tile * tile * 3 * 0.06
    per_unit = (rows * min(tiles, 5) * thumb * thumb * 3 * 0.04
                + rows * (tiles * tile * tile * 0.02 + 100) + 12_000)
    return int(units * per_unit + shared)


def _images_of(e: Any) -> list[Any]:
    """An explanation's top images and random samples (none in records before schema v3)."""
    samples = getattr(e, "samples", None)
    return [*(getattr(e, "top_images", None) or []), *(samples.images if samples else [])]


def describe(obj: Any) -> str:
    """Compact text of a value for tables (floats to 4 decimals)."""
    if isinstance(obj, float):
        return f"{obj:.4f}"
    return "" if obj is None else str(obj)
