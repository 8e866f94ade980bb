"""The report's work unit: one block of units -> tiles, sprites and unit pages (report.md §3.9 R2).

:func:`render_block` (job directory, layer, units [u0, u1)) draws the block's tiles
(:mod:`ray_dissect.report.draw`: one pass over its activations, the source images and label
maps of the images its records select), writes each unit's page
(``units/<layer>/<unit>.html``), then ``_render/<layer>/<u0>-<u1>.json`` (what the layer
pages need: sprites, rows, histograms) and last its done marker ``.done`` holding a digest of
every input (the block's records and top images, the options, the footer, the classes). A
block whose marker holds the same digest is not redone; everything is written with fixed
settings, so a rerun writes the same bytes.

It is a pure function of the job directory and its arguments (no Ray, no driver state), so the
driver runs it in-process or as one task per block, e.g.
``render_block("s3://runs/demo", "_bn1", (0, 64), "s3://runs/demo/report", options, classes)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from ray_dissect import __version__, storage
from ray_dissect.job.layout import done_marker, layer_key
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report.draw import RowPlan, draw_block, row_plans, wants_page
from ray_dissect.report.heat import jet_filter
from ray_dissect.report.meta import BlockTiles, ReportOptions, UnitTiles
from ray_dissect.report.pages import Nav, Site, common_context, image_quantile, unit_context
from ray_dissect.report.tiles import TileStyle
from ray_dissect.report.unit_attribution import UnitAttributionBlock
from ray_dissect.report.visuals import RFBlock
from ray_dissect.results import JobResults, open_job
from ray_dissect.storage import AnyPath

Classes = dict[int, list[tuple[int, float, str]]]
RENDER_FORMAT = 2
"""The layout of what a block writes; part of its digest, so that a report written by an
earlier layout (2: heat overlays at the maps' own size) is redrawn, not reused."""


def meta_path(out: AnyPath, layer: str, units: tuple[int, int]) -> AnyPath:
    """Where a block's :class:`BlockTiles` JSON is kept (its done marker beside it)."""
    return out / "_render" / layer_key(layer) / f"{units[0]:07d}-{units[1]:07d}.json"


def block_digest(records: list[UnitRecord], plans: list[list[RowPlan]], pages: list[bool],
                 style: TileStyle, context: dict[str, Any]) -> str:
    """A digest of everything a block's output depends on (its done marker holds it)."""
    data = {"records": [r.model_dump(mode="json") for r in records],
            "rows": [[asdict(p) for p in u] for u in plans], "pages": pages,
            "style": asdict(style), "context": context, "version": __version__,
            "format": RENDER_FORMAT}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_block(job: str | AnyPath | JobResults, layer: str, units: tuple[int, int],
                 out: str | AnyPath | None = None, options: ReportOptions | None = None,
                 classes: Classes | None = None, nav: Nav | None = None) -> BlockTiles:
    """Render units [u0, u1) of ``layer`` (see the module docstring); resumable.

    Args:
        job: the job directory (path or URI) or its opened :class:`JobResults`.
        out: the report directory (default ``DIR/report``).
        options: the report's options.
        classes: per unit of the block, the classes it feeds most as (class, weight, name)
            (last layer, when the spec names a classifier).
        nav: the stages' pages the unit pages link
            (:func:`~ray_dissect.report.pages.nav_links`; default none).
    """
    results = job if isinstance(job, JobResults) else open_job(job)
    root = storage.location(out) if out is not None else results.root / "report"
    options = options or ReportOptions()
    style = options.tile_style(results.image_side())
    layer_records = results.records(layer)
    records = layer_records[units[0]:units[1]]
    t = results.iou_threshold
    page_of = [wants_page(r, options.unit_pages, t) for r in layer_records]
    image_q = image_quantile(results)
    plans = [row_plans(r, image_q) for r in records]
    common = common_context(results, options, style, nav or {"main": [], "stages": []})
    context = {"common": {k: v for k, v in common.items() if k != "page_kind"},
               "classes": sorted((classes or {}).items()), "layer": layer, "units": units,
               "neighbours": [page_of[i] for i in (units[0] - 1, units[1])
                              if 0 <= i < len(page_of)]}
    fields, attr = RFBlock(results, layer, units), UnitAttributionBlock(results, layer, units)
    if (rf_digest := fields.digest()) is not None:  # a block without fields: no such key
        context["receptive_fields"] = rf_digest
    if (attr_digest := attr.digest()) is not None:
        context["unit_attribution"] = attr_digest
    digest = block_digest(records, plans, page_of[units[0]:units[1]], style, context)
    meta = meta_path(root, layer, units)
    if done_marker(meta).exists() and storage.read_text(done_marker(meta)) == digest:
        return BlockTiles.model_validate_json(storage.read_text(meta))
    drawn = draw_block(results, layer, units, plans, page_of[units[0]:units[1]], style, root)
    fields.write(root, {t.unit: t.page for t in drawn})
    site = Site(root, common)
    links = [f"{r.unit}.html" if page else None
             for r, page in zip(layer_records, page_of, strict=True)]
    for p, (rec, tiles) in enumerate(zip(records, drawn, strict=True), start=units[0]):
        if tiles.page:
            around = (links[p - 1] if p > 0 else None, links[p + 1] if p + 1 < len(links)
                      else None)
            _unit_page(site, results, rec, tiles, around, (classes or {}).get(rec.unit, []),
                       style, fields.context(rec.unit), attr.write(root, rec.unit))
    block = BlockTiles(layer=layer, units=units, digest=digest, tiles=drawn)
    storage.makedirs(meta.parent)
    storage.write_text(meta, block.model_dump_json() + "\n")
    storage.write_text(done_marker(meta), digest)
    return block


def _unit_page(site: Site, results: JobResults, rec: UnitRecord, tiles: UnitTiles,
               around: tuple[str | None, str | None], classes: list[tuple[int, float, str]],
               style: TileStyle, rf: dict[str, Any] | None = None,
               unit_attr: dict[str, Any] | None = None) -> None:
    """Write ``units/<layer>/<unit>.html``; ``around``: the pages of the previous and next
    records (None without a page): the neighbours among the units the job dissects;
    ``rf``: its receptive field (:meth:`RFBlock.context`); ``unit_attr``: its per-unit
    attribution (:meth:`UnitAttributionBlock.write`)."""
    u = rec.unit
    ctx = unit_context(results, rec, tiles, around, classes)
    site.page(f"units/{layer_key(rec.layer)}/{u}.html", "unit.html", page_kind="unit",
              views=list(style.views), tiles_view=default_view(style, ctx["concepts"]),
              tile=style.size, gap=style.gap, rf=rf,
              heat_filter=jet_filter() if style.overlay and "heat" in style.views else "",
              unit_attr=unit_attr, **ctx)


def default_view(style: TileStyle, concepts: bool) -> str:
    """The unit page's first tile view: the unit mask, or its heat-map without a dissection
    (method none: nothing is masked)."""
    return "heat" if not concepts and "heat" in style.views else "mask"
