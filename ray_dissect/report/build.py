"""The report's driver: render the tiles block by block, then write every page.

``DIR/report/`` (or ``out``) holds::

    index.html  concepts.html  classes.html  about.html
    layers/<layer>.html           plots, header, the unit grid (first page prerendered)
    units/<layer>/<unit>.html     one page per unit (+ <unit>_<row>[_raw|_concept].jpg strips)
    img/<layer>/<unit>.jpg        one sprite per unit (its card's tiles)
    data/<layer>.js               window.RD.add("<layer>", {...}): the grid's data
    assets/report.css report.js   hand-written, no framework
    _render/<layer>/<u0>-<u1>.json(.done)   per block of units: what the pages need

Tiles are rendered by :func:`ray_dissect.report.render.render_block`, one call per block of
``block_units`` units; ``renderer`` decides where those calls run (in this process by default;
a Ray map in the runtime). The driver writes the pages. Everything is deterministic: building
twice gives byte-identical files, and a rebuild renders only blocks whose inputs changed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import RayDissectError, SpecError
from ray_dissect.job.layout import layer_key, unit_blocks
from ray_dissect.report import pages as pg
from ray_dissect.report import plots
from ray_dissect.report.catalog import (
    class_table,
    concept_entries,
    head_weights,
    layer_rows,
    provenance,
    size_estimate,
    unique_by_category,
)
from ray_dissect.report.render import BLOCK_UNITS, BlockTiles, Pages, UnitTiles, render_block
from ray_dissect.report.tiles import STYLES, TileStyle
from ray_dissect.storage import AnyPath

if TYPE_CHECKING:
    from ray_dissect.report.results import JobResults

log = logging.getLogger(__name__)
BlockCall = tuple[str, tuple[int, int]]
Renderer = Callable[[Sequence[BlockCall]], Iterable[BlockTiles]]


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows and how big it gets.

    Attributes:
        style: ``default`` (112-px tiles, contour, three views) or ``ndl`` (NetDissect-Lite's
            strip: 224 px, 3-px gaps, no contour).
        tile: full-size tile side in px (overrides the style's).
        unit_pages: ``all`` units get a page, or only ``interpretable`` ones (label or a
            range at the IoU threshold).
        block_units: units per render call.
    """

    style: Literal["default", "ndl"] = "default"
    tile: int | None = None
    unit_pages: Pages = "all"
    block_units: int = BLOCK_UNITS

    def tile_style(self, image_side: int | None = None) -> TileStyle:
        """The tile style these options select; the default style's tiles are no larger than
        the dataset's images (``image_side``)."""
        if self.style not in STYLES:
            raise SpecError("unknown report style", given=self.style,
                            expected=f"one of {sorted(STYLES)}", hint="use --style default")
        base = STYLES[self.style]
        if self.tile is None:
            if self.style == "default" and image_side and image_side < base.size:
                return TileStyle(**{**base.__dict__, "size": image_side})
            return base
        if not 8 <= self.tile <= 1024:
            raise SpecError("bad tile size", given=self.tile, expected="8 to 1024 px",
                            hint="e.g. --tile 112")
        return TileStyle(**{**base.__dict__, "size": self.tile})

    def describe(self) -> dict[str, str]:
        """The options as footer text."""
        return {"style": self.style, "unit pages": self.unit_pages}


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out: the report directory; ``index`` its ``index.html``.
        pages: HTML pages written.
        blocks: render blocks (done or redone).
        estimate: the size estimated before building, bytes.
        seconds: wall time.
    """

    out: AnyPath
    index: AnyPath
    pages: int
    blocks: int
    estimate: int
    seconds: float


def render_calls(results: JobResults, options: ReportOptions) -> list[BlockCall]:
    """(layer, (u0, u1)) of every render block of the layers that have records."""
    return [(layer, block) for layer in results.layers
            for block in unit_blocks(len(results.records(layer)), options.block_units)]


def build_report(results: JobResults, out: str | Path | AnyPath | None = None,
                 options: ReportOptions | None = None, renderer: Renderer | None = None
                 ) -> ReportResult:
    """Build the static site of a (finished or partial) job directory.

    Args:
        results: the opened job (:func:`ray_dissect.open_job`).
        out: the report directory, a path or URI (default ``DIR/report``).
        options: see :class:`ReportOptions`.
        renderer: runs render calls and yields their :class:`BlockTiles` (default: in this
            process, in order).
    """
    start, options = time.perf_counter(), options or ReportOptions()
    root = storage.location(out) if out is not None else results.root / "report"
    style = options.tile_style(_image_side(results))
    estimate = size_estimate(results, _rows(results), 10, style.size, style.thumb)
    log.info("report: about %.1f MB expected in %s", estimate / 1e6, root)
    calls = render_calls(results, options)

    def in_process(todo: Sequence[BlockCall]) -> Iterable[BlockTiles]:
        for layer, units in todo:
            yield render_block(results, layer, units, root, style, options.unit_pages)

    tiles: dict[str, dict[int, UnitTiles]] = {layer: {} for layer in results.layers}
    for block in (renderer or in_process)(calls):
        tiles[block.layer].update({t.unit: t for t in block.tiles})
    site = pg.Site(root, _common(results, options, style))
    _write_pages(site, results, tiles, style, estimate)
    seconds = time.perf_counter() - start
    log.info("report: %d pages, %d render blocks in %.1f s", site.pages, len(calls), seconds)
    return ReportResult(root, root / "index.html", site.pages, len(calls), estimate, seconds)


def _image_side(results: JobResults) -> int | None:
    """The larger side of the dataset's first image (as its index lists it)."""
    try:
        samples = results.dataset.samples
    except RayDissectError:
        return None
    return max(samples[0].image_size) if samples else None


def _rows(results: JobResults) -> int:
    """Tile rows per unit expected (top, plus two per range)."""
    recs = next((results.records(layer) for layer in results.layers
                 if results.records(layer)), [])
    return 1 + 2 * max((len(r.explanations) for r in recs[:16]), default=0)


def _common(results: JobResults, options: ReportOptions, style: TileStyle
            ) -> dict[str, object]:
    described = {**options.describe(), "tile": f"{style.size} px"}
    return {"job_name": results.spec.name, "missing": results.missing_layers(),
            "provenance": provenance(results, described), "page_kind": "page"}


def _write_pages(site: pg.Site, results: JobResults, tiles: dict[str, dict[int, UnitTiles]],
                 style: TileStyle, estimate: int) -> None:
    for name in ("report.css", "report.js"):
        site.asset(name)
    weights, message = head_weights(results)
    cards = {}
    for layer in results.layers:
        cards[layer] = pg.layer_cards(results, layer, tiles[layer])
        _layer_pages(site, results, layer, cards[layer], tiles[layer], weights, style)
    _index_page(site, results)
    page_of = {(layer, c.unit): c.href is not None for layer in cards for c in cards[layer]}
    site.page("concepts.html", "concepts.html", entries=concept_entries(results, page_of),
              threshold=results.spec.method.iou_threshold)
    _classes_page(site, results, cards[results.layers[-1]], weights, message)
    _about_page(site, results, style, estimate)


def _layer_pages(site: pg.Site, results: JobResults, layer: str, cards: list[pg.Card],
                 tiles: dict[int, UnitTiles], weights: np.ndarray | None, style: TileStyle
                 ) -> None:
    key = layer_key(layer)
    t = results.spec.method.iou_threshold
    site.write(f"data/{key}.js", pg.layer_data_js(layer, cards, t))
    site.page(f"layers/{key}.html", "layer.html",
              **pg.layer_context(results, layer, cards))
    records = results.records(layer)
    for i, rec in enumerate(records):
        if cards[i].href is None:
            continue
        prev = f"{rec.unit - 1}.html" if i > 0 and cards[i - 1].href else None
        nxt = f"{rec.unit + 1}.html" if i + 1 < len(records) and cards[i + 1].href else None
        ctx = pg.unit_context(results, rec, tiles.get(rec.unit), (prev, nxt), weights)
        site.page(f"units/{key}/{rec.unit}.html", "unit.html", page_kind="unit",
                  views=list(style.views), tile=style.size, gap=style.gap, **ctx)


def _index_page(site: pg.Site, results: JobResults) -> None:
    summaries = [results.layer_summary(layer) for layer in results.layers]
    unique = {layer: unique_by_category(results.records(layer)) for layer in results.layers}
    site.page("index.html", "index.html", layer_rows=layer_rows(results),
              method=results.spec.method.kind, threshold=results.spec.method.iou_threshold,
              quantile=f"{results.spec.method.quantile:g}",
              stacks=plots.layer_stacks(summaries, unique), formulas=pg.formulas_table(results),
              identical=pg.identical_layers(results))


def _classes_page(site: pg.Site, results: JobResults, cards: list[pg.Card],
                  weights: np.ndarray | None, message: str) -> None:
    layer = results.layers[-1]
    table = class_table(weights, results.records(layer)) if weights is not None else []
    links = {c.unit: c.href.removeprefix("../") if c.href else None for c in cards}
    site.page("classes.html", "classes.html", message=message, table=table, n=10, layer=layer,
              classifier=results.spec.model.classifier, pages=links,
              sprites=pg.sprite_links(cards))


def _about_page(site: pg.Site, results: JobResults, style: TileStyle, estimate: int) -> None:
    s = results.summary
    site.page("about.html", "about.html", style=style,
              denominator=results.spec.method.denominator, estimate=f"{estimate / 1e6:.1f} MB",
              errors=len(results.errors()),
              stage_seconds=sorted((s.stage_seconds if s else {}).items()),
              spec_json=json.dumps(results.spec.model_dump(mode="json"), indent=2,
                                   sort_keys=True))
