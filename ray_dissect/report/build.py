"""The report's driver: render the blocks of units, then write the layer and site pages.

``DIR/report/`` (or ``out``) holds::

    index.html  concepts.html  classes.html  about.html
    <page>.html                   a stage's page (``pages``), when the job has what it
                                  shows: attribution.html, prism.html (+ attribution/,
                                  prism/ PNGs), studies.html
    layers/<layer>.html           plots, header, the unit grid (first page prerendered)
    units/<layer>/<unit>.html     one page per unit (+ <unit>_<row>[_raw|_concept].jpg strips,
                                  <unit>_rf.png its receptive field when the stage ran)
    img/<layer>/<unit>.webp       one sprite per unit (its card's tiles)
    data/<layer>.js               window.RD.add("<layer>", {...}): the grid's data
    assets/report.css report.js   hand-written, no framework
    _render/<layer>/<u0>-<u1>.json(.done)   per block of units: what the layer pages need

Blocks of ``block_units`` units are rendered by the work unit
:func:`ray_dissect.report.render.render_block` (tiles, sprites, unit pages); ``renderer``
decides where those calls run (in this process by default; a Ray map in the runtime). The
driver then writes the pages that span units, and the stages' own pages it is given
(:class:`~ray_dissect.report.pages.ReportPage`: nav entry and writer; the report knows no
stage). Everything is deterministic: building twice
gives byte-identical files, and a rebuild renders only the blocks whose inputs changed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ray_dissect import storage
from ray_dissect.job.layout import layer_key, unit_blocks
from ray_dissect.job.progress import Progress, QuietProgress
from ray_dissect.report import pages as pg
from ray_dissect.report import plots
from ray_dissect.report.catalog import (
    class_table,
    concept_entries,
    concept_gallery,
    head_weights,
    layer_rows,
    size_estimate,
    unique_by_category,
    unit_classes,
)
from ray_dissect.report.meta import BlockTiles, ReportOptions, UnitTiles
from ray_dissect.report.pages import Nav, ReportPage
from ray_dissect.report.render import Classes, render_block
from ray_dissect.report.tiles import TileStyle
from ray_dissect.report.visual_pages import names_for
from ray_dissect.report.visuals import rf_layer_context
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath

__all__ = ["RenderCall", "ReportOptions", "ReportPage", "ReportResult", "build_report",
           "render_calls"]
log = logging.getLogger(__name__)
GALLERY_UNITS = 5
"""Units per concept in the concepts page's gallery."""
RenderCall = tuple[str, tuple[int, int], Classes, Nav]
Renderer = Callable[[Sequence[RenderCall], AnyPath, ReportOptions], Iterable[BlockTiles]]


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out: the report directory; ``index`` its ``index.html``.
        pages: HTML pages of the site: the driver's and the unit pages.
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


def render_calls(results: JobResults, options: ReportOptions, weights: np.ndarray | None,
                 nav: Nav | None = None) -> list[RenderCall]:
    """(layer, (u0, u1), classes of its units, ``nav``) of every render block of the layers
    with records; classes only for the last layer, when the head's weights are known;
    ``nav``: the stages' pages the unit pages link (:func:`~ray_dissect.report.pages.nav_links`,
    default none)."""
    nav = nav or {"main": [], "stages": []}
    names = names_for(results, len(weights)) if weights is not None else ()
    calls = []
    for layer in results.layers:
        last = layer == results.layers[-1] and weights is not None
        records = results.records(layer)
        for u0, u1 in unit_blocks(len(records), options.block_units):
            classes = ({r.unit: unit_classes(weights, r.unit, names) for r in records[u0:u1]}
                       if last else {})
            calls.append((layer, (u0, u1), classes, nav))
    return calls


def build_report(results: JobResults, out: str | Path | AnyPath | None = None,
                 options: ReportOptions | None = None, renderer: Renderer | None = None,
                 pages: Sequence[ReportPage] = (), progress: Progress | None = None
                 ) -> ReportResult:
    """Build the static site of a (finished or partial) job directory.

    Args:
        results: the opened job (:func:`ray_dissect.open_job`).
        out: the report directory, a path or URI (default ``DIR/report``).
        options: see :class:`ReportOptions`.
        renderer: ``renderer(calls, report_dir, options)`` runs render calls and yields their
            :class:`BlockTiles` in any order (default: this process, in order; the CLI uses
            Ray tasks, :mod:`ray_dissect.runtime.report`); a call is
            ``render_block(results, layer, units, report_dir, options, classes, nav)``.
        pages: the pages the stages add (nav entry and writer), in nav order; those the job
            has are linked and written. :func:`ray_dissect.build_report` passes every
            stage's (:func:`ray_dissect.pipeline.table.report_pages`).
        progress: told ``start("report", blocks + 1)``, then one step per render block
            (by the default renderer; a given renderer advances it itself) and one when the
            site's pages are written.
    """
    start, options = time.perf_counter(), options or ReportOptions()
    progress = progress or QuietProgress()
    root = storage.location(out) if out is not None else results.root / "report"
    style = options.tile_style(results.image_side())
    estimate = size_estimate(results, _rows(results), 10, style.size, style.thumb,
                             style.overlay)
    log.info("report: about %.1f MB expected in %s", estimate / 1e6, root)
    weights, message = head_weights(results)
    shown = [page for page in pages if page.present(results)]
    calls = render_calls(results, options, weights, pg.nav_links(shown))
    progress.start("report", len(calls) + 1)
    for layer in results.layers:
        if results.records(layer) and results.feature_shape(layer) is None:
            log.warning("no activations for layer %r: its report shows no tiles", layer)

    def in_process(todo: Sequence[RenderCall], where: AnyPath, opts: ReportOptions
                   ) -> Iterable[BlockTiles]:
        for layer, units, classes, nav in todo:
            yield render_block(results, layer, units, where, opts, classes, nav)
            progress.advance("report")

    tiles: dict[str, dict[int, UnitTiles]] = {layer: {} for layer in results.layers}
    for block in (renderer or in_process)(calls, root, options):
        tiles[block.layer].update({t.unit: t for t in block.tiles})
    site = pg.Site(root, pg.common_context(results, options, style, pg.nav_links(shown)))
    _write_pages(site, results, tiles, style, estimate, (weights, message))
    for page in shown:
        page.write(site, results)
    progress.advance("report")
    seconds = time.perf_counter() - start
    count = site.pages + sum(t.page for layer in tiles.values() for t in layer.values())
    log.info("report: %d pages, %d render blocks in %.1f s", count, len(calls), seconds)
    return ReportResult(root, root / "index.html", count, len(calls), estimate, seconds)


def _rows(results: JobResults) -> int:
    """Tile rows per unit expected (top, plus two per range)."""
    recs = next((results.records(layer) for layer in results.layers
                 if results.records(layer)), [])
    return 1 + 2 * max((len(r.explanations) for r in recs[:16]), default=0)


def _write_pages(site: pg.Site, results: JobResults, tiles: dict[str, dict[int, UnitTiles]],
                 style: TileStyle, estimate: int, head: tuple[np.ndarray | None, str]
                 ) -> None:
    for name in ("report.css", "report.js"):
        site.asset(name)
    cards = {}
    for layer in results.layers:
        cards[layer] = pg.layer_cards(results, layer, tiles[layer])
        key, t = layer_key(layer), results.iou_threshold
        site.write(f"data/{key}.js", pg.layer_data_js(layer, cards[layer], t))
        site.page(f"layers/{key}.html", "layer.html",
                  **pg.layer_context(results, layer, cards[layer]),
                  rf=rf_layer_context(results, layer, {c.unit: c.href for c in cards[layer]}))
    _index_page(site, results)
    _concepts_page(site, results, cards, tiles, style)
    _classes_page(site, results, cards[results.layers[-1]], *head)
    _about_page(site, results, style, estimate)


def _concepts_page(site: pg.Site, results: JobResults, cards: dict[str, list[pg.Card]],
                   tiles: dict[str, dict[int, UnitTiles]], style: TileStyle) -> None:
    page_of = {(layer, c.unit): c.href is not None for layer in cards for c in cards[layer]}
    site.page("concepts.html", "concepts.html", entries=concept_entries(results, page_of),
              threshold=results.iou_threshold, k=GALLERY_UNITS,
              gallery=concept_gallery(results, cards, tiles, GALLERY_UNITS),
              method=results.spec.method.kind, thumb=style.thumb,
              step=style.thumb + style.thumb_gap)


def _index_page(site: pg.Site, results: JobResults) -> None:
    summaries = [results.layer_summary(layer) for layer in results.layers]
    unique = {layer: unique_by_category(results.records(layer)) for layer in results.layers}
    site.page("index.html", "index.html", layer_rows=layer_rows(results),
              method=results.spec.method.kind, threshold=results.iou_threshold,
              quantile=results.quantile_text,
              stacks=plots.layer_stacks(summaries, unique), formulas=pg.formulas_table(results),
              identical=pg.identical_layers(results))


def _classes_page(site: pg.Site, results: JobResults, cards: list[pg.Card],
                  weights: np.ndarray | None, message: str) -> None:
    layer = results.layers[-1]
    table = class_table(weights, results.records(layer)) if weights is not None else []
    links = {c.unit: c.href.removeprefix("../") if c.href else None for c in cards}
    names = names_for(results, len(weights)) if weights is not None else ()
    site.page("classes.html", "classes.html", message=message, table=table, n=10, layer=layer,
              classifier=results.spec.model.classifier, pages=links,
              sprites=pg.sprite_links(cards), names=dict(enumerate(names)),
              formulas=any(u.formula for _, up, down in table for u in (*up, *down)))


def _about_page(site: pg.Site, results: JobResults, style: TileStyle, estimate: int) -> None:
    s = results.summary
    site.page("about.html", "about.html", style=style,
              denominator=results.denominator, estimate=f"{estimate / 1e6:.1f} MB",
              errors=len(results.errors()),
              stage_seconds=sorted((s.stage_seconds if s else {}).items()),
              spec_json=json.dumps(results.spec.model_dump(mode="json"), indent=2,
                                   sort_keys=True))
