"""Drawing one block of units' tiles: which images each row shows, one pass over the block's
activations, the tiles, strips and sprites written as JPEG (report.md §3.4).

Per unit, rows (:func:`row_plans`): its top activations by spatial max (the NetDissect mask,
the label outlined), then per range its top images by in-range pixels and its random samples
(the range's mask, the formula outlined), as the records list them (``UnitRecord.top_images``,
``Explanation.top_images`` / ``samples``, schema v3; none in older records). One pass over
the block's activations (every image, its units) gives the per-unit 32-bin histograms and the
maps the rows show; images and label maps are read through the results' cache.

Writes, relative to the report directory: ``img/<layer>/<unit>.webp`` (the card's sprite: one row
per range, or the top row, ``sprite_tiles`` thumbnails each) and, for units with a page,
``units/<layer>/<unit>_<row>.jpg`` (+ ``_raw``, ``_concept``, ``_heat``), one full-size strip
per row and view (overlay style: ``.webp`` overlays over shared images, ``_heat.png`` the row's
maps at their own size, :mod:`ray_dissect.report.heat`).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError, ConceptDataset
from ray_dissect.errors import StoreError
from ray_dissect.job.layout import layer_key
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report import tiles as tl
from ray_dissect.report.heat import encode_heat, heat_values
from ray_dissect.report.meta import Histogram, Pages, RowKind, RowTiles, TileInfo, UnitTiles
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)
HIST_BINS = 32
SOURCES = 256
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class RowPlan:
    """Which images one row shows and which mask is drawn on them."""

    key: str
    kind: RowKind
    title: str
    range_index: int | None
    lo: float
    hi: float | None
    inclusive: bool
    concept: dict[str, Any] | None
    images: tuple[tuple[int, str], ...]
    seed: int | None = None
    image_quantile: float | None = None  # per-image rule: each image's own 1 - q quantile


def _images(items: Any) -> tuple[tuple[int, str], ...]:
    return tuple((int(t.index), str(t.image)) for t in items or [])


def _node(formula: Any) -> dict[str, Any] | None:
    if formula is None:
        return None
    return formula if isinstance(formula, dict) else dict(formula.model_dump())


def row_plans(rec: UnitRecord, image_quantile: float | None = None) -> list[RowPlan]:
    """The rows of a record's tiles: top activations (NetDissect's quantile mask, label
    outlined; with ``image_quantile`` q, the per-image rule's mask above each image's own
    1 - q quantile), then per range its top in-range images and its random samples."""
    rows = []
    tops = _images(getattr(rec, "top_images", None))
    if tops:  # no threshold (method none, or no finite value): the images, nothing masked
        leaf = ({"op": "leaf", "concept": rec.label.number, "name": rec.label.name}
                if rec.label else None)
        lo = rec.threshold if rec.threshold is not None else -math.inf
        rows.append(RowPlan("top", "top", "top activations (spatial max)", None,
                            lo, None, False, leaf, tops, image_quantile=image_quantile))
    for e in rec.explanations:
        ri, concept = e.range_index, _node(e.formula)
        tops = _images(getattr(e, "top_images", None))
        if tops:
            rows.append(RowPlan(f"r{ri}", "range", f"range {ri}: most in-range pixels", ri,
                                e.lo, e.hi, e.inclusive, concept, tops))
        samples = getattr(e, "samples", None)
        if samples is not None and samples.images:
            rows.append(RowPlan(f"r{ri}s", "samples",
                                f"range {ri}: random in-range images (seed {samples.seed})",
                                ri, e.lo, e.hi, e.inclusive, concept, _images(samples.images),
                                int(samples.seed)))
    return rows


def sprite_rows(plans: list[RowPlan]) -> list[RowPlan]:
    """The rows a unit card's sprite shows: each range's top row, else the top row."""
    ranges = [p for p in plans if p.kind == "range"]
    return ranges or [p for p in plans if p.kind == "top"]


def wants_page(rec: UnitRecord, pages: Pages, iou_threshold: float) -> bool:
    """Whether a unit gets its own page (``interpretable``: its label or a range passes)."""
    if pages == "all":
        return True
    return rec.interpretable or any(e.iou >= iou_threshold for e in rec.explanations)


def draw_block(results: JobResults, layer: str, units: tuple[int, int],
               plans: list[list[RowPlan]], pages: list[bool], style: tl.TileStyle,
               out: AnyPath) -> list[UnitTiles]:
    """Draw and write the tiles of units [u0, u1) of ``layer``; return what the pages need.

    Args:
        plans: per unit of the block, its rows (:func:`row_plans`).
        pages: per unit, whether it gets a unit page (and full-size strips).
        out: the report directory.
    """
    records = results.records(layer)[units[0]:units[1]]
    try:
        hists, maps = _scan(results, layer, units, plans)
    except StoreError:  # activations removed (or never written): no histogram, no tile
        log.debug("no activations for layer %r: no tiles, no histograms", layer)
        hists = [Histogram(edges=[], counts=[], zeros=0, nonfinite=0) for _ in records]
        maps, plans = {}, [[] for _ in records]
    painter = _Painter(results, style, out, layer)
    maps = {(i, records[u - units[0]].unit): m for (i, u), m in maps.items()}  # by unit
    with _one_thread():
        return [painter.unit(r.unit, p, pg, maps, h)
                for r, p, pg, h in zip(records, plans, pages, hists, strict=True)]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one thread while tiles are drawn: a block is the unit of parallelism, and
    torch's thread pool makes these small upsamplings ~20x slower on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scan(results: JobResults, layer: str, units: tuple[int, int], plans: list[list[RowPlan]]
          ) -> tuple[list[Histogram], dict[tuple[int, int], np.ndarray]]:
    """One pass over the block's activations: per-unit histograms, and the maps the rows
    show, keyed (image, unit), each (h, w) float32."""
    acts = results.activations(layer)
    n, (u0, u1) = int(acts.shape[0]), units
    bad = np.zeros(n, bool)
    bad[[i for i in results.bad_images() if i < n]] = True
    wanted = {(i, u0 + k) for k, ps in enumerate(plans) for p in ps for i, _ in p.images}
    step = max(1, CHUNK_BYTES // max(1, 4 * (u1 - u0) * int(np.prod(acts.shape[2:]))))
    chunks = [(s, min(s + step, n)) for s in range(0, n, step)]
    kept: dict[int, np.ndarray] = {}

    def read(s: int, e: int) -> np.ndarray:  # a block that fits one chunk is read once
        if s not in kept:
            block = np.asarray(acts[s:e, u0:u1], dtype=np.float32)
            if len(chunks) > 1:
                return block
            kept[s] = block
        return kept[s]

    lo, hi, maps = _ranges_and_maps(read, units, chunks, bad, wanted)
    counts = np.zeros((u1 - u0, HIST_BINS), np.int64)
    zeros, nonfinite = np.zeros(u1 - u0, np.int64), np.zeros(u1 - u0, np.int64)
    for s, e in chunks:
        block = read(s, e)[~bad[s:e]]
        for k in range(u1 - u0):
            v = block[:, k].ravel()
            fin = np.isfinite(v)
            nonfinite[k] += int((~fin).sum())
            zeros[k] += int((v == 0).sum())
            if np.isfinite(lo[k]):
                counts[k] += np.histogram(v[fin & (v != 0)], HIST_BINS, (lo[k], hi[k]))[0]
    hists = [Histogram(edges=_edges(lo[k], hi[k]), counts=[int(c) for c in counts[k]]
                       if np.isfinite(lo[k]) else [], zeros=int(zeros[k]),
                       nonfinite=int(nonfinite[k])) for k in range(u1 - u0)]
    return hists, maps


def _edges(lo: float, hi: float) -> list[float]:
    if not np.isfinite(lo):
        return []
    return [float(x) for x in np.histogram_bin_edges([], HIST_BINS, (lo, hi))]


def _ranges_and_maps(read: Callable[[int, int], np.ndarray], units: tuple[int, int],
                     chunks: list[tuple[int, int]],
                     bad: np.ndarray, wanted: set[tuple[int, int]]
                     ) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """Per unit min and max of its finite non-zero values (inf/-inf when none), and the maps
    of the wanted (image, unit) pairs."""
    u0, u1 = units
    lo, hi = np.full(u1 - u0, np.inf), np.full(u1 - u0, -np.inf)
    maps: dict[tuple[int, int], np.ndarray] = {}
    for s, e in chunks:
        block = read(s, e)
        for i, u in wanted:
            if s <= i < e:
                maps[(i, u)] = block[i - s, u - u0].copy()
        flat = block[~bad[s:e]].transpose(1, 0, 2, 3).reshape(u1 - u0, -1)
        ok = np.isfinite(flat) & (flat != 0)
        lo = np.minimum(lo, np.where(ok, flat, np.inf).min(axis=1, initial=np.inf))
        hi = np.maximum(hi, np.where(ok, flat, -np.inf).max(axis=1, initial=-np.inf))
    return lo, hi, maps


class _Painter:
    """Draws and writes one block's tiles. Images and label maps come through the results'
    cache; each image at tile size (and dimmed) is kept for the block (``SOURCES`` most
    recent), since units of a block share many top images."""

    def __init__(self, results: JobResults, style: tl.TileStyle, out: AnyPath, layer: str
                 ) -> None:
        self.results, self.style, self.out, self.key = results, style, out, layer_key(layer)
        dataset = results.dataset  # an image folder (method none) has no masks: 1 x 1
        self.mask_shape = dataset.mask_shape if isinstance(dataset, ConceptDataset) else (1, 1)
        self._sources: OrderedDict[tuple[int, int], tl.Source] = OrderedDict()
        self._shared: set[str] = set()

    def source(self, index: int, size: int) -> tl.Source:
        key = (index, size)
        if key not in self._sources:
            self._sources[key] = tl.source(self.image(index), size, self.style)
            if len(self._sources) > SOURCES:
                self._sources.popitem(last=False)
        self._sources.move_to_end(key)
        return self._sources[key]

    def image(self, index: int) -> np.ndarray:
        try:
            return self.results.view(index)
        except BadSampleError:
            return np.full((8, 8, 3), 128, np.uint8)

    def labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self.results.labels(index)
        except BadSampleError:
            return np.zeros((0, *self.mask_shape), np.int32), np.zeros(0, np.int32)

    def unit(self, unit: int, plans: list[RowPlan], page: bool,
             maps: dict[tuple[int, int], np.ndarray], hist: Histogram) -> UnitTiles:
        """Draw a unit's rows; write its sprite and (with a page) its strips."""
        drawn = {p.key: self._row(unit, p, maps) for p in plans}
        rows = [self._write_row(unit, p, *drawn[p.key]) for p in plans] if page else []
        chosen = sprite_rows(plans)
        sprite, width, height = None, 0, 0
        if chosen:
            pixels = tl.sprite([drawn[p.key][1] for p in chosen], self.style)
            sprite = f"img/{self.key}/{unit}.webp"
            self._write_bytes(sprite, tl.encode_webp(pixels, self.style.sprite_quality))
            height, width = pixels.shape[:2]
        return UnitTiles(unit=unit, page=page, sprite=sprite, sprite_width=width,
                         sprite_height=height, sprite_rows=[p.key for p in chosen], rows=rows,
                         histogram=hist)

    def _row(self, unit: int, plan: RowPlan, maps: dict[tuple[int, int], np.ndarray]
             ) -> tuple[dict[str, np.ndarray], np.ndarray, list[TileInfo]]:
        """Per view the full-size tiles, the sprite thumbnails, and the captions."""
        stack = np.stack([maps[(i, unit)] for i, _ in plan.images])
        lo: float | np.ndarray = plan.lo
        if plan.image_quantile is not None:  # each image above its own quantile
            flat = stack.reshape(len(stack), -1).astype(np.float64)
            lo = np.quantile(flat, 1.0 - plan.image_quantile, axis=1)[:, None, None]
        masks = tl.range_mask(stack, self.mask_shape, lo, plan.hi, plan.inclusive)
        concepts = (np.stack([tl.formula_mask(plan.concept, *self.labels(i))
                              for i, _ in plan.images]) if plan.concept is not None else None)
        views = self._views(plan, stack, masks, concepts)
        k = self.style.sprite_tiles
        small = [self.source(i, self.style.thumb) for i, _ in plan.images[:k]]
        thumbs = tl.compose_row(small, masks[:k], None, ["mask"], self.style)["mask"]
        peaks = stack.reshape(len(stack), -1).max(axis=1)
        infos = [TileInfo(index=index, image=name,
                          value=float(peak) if np.isfinite(peak) else None,
                          pixels=int(mask.sum()),
                          iou=tl.tile_iou(mask, concepts[j]) if concepts is not None else None)
                 for j, ((index, name), peak, mask) in enumerate(
                     zip(plan.images, peaks, masks, strict=True))]
        return {str(v): tiles for v, tiles in views.items()}, thumbs, infos

    def _views(self, plan: RowPlan, stack: np.ndarray, masks: np.ndarray,
               concepts: np.ndarray | None) -> dict[tl.View, np.ndarray]:
        """The full-size tiles per view, or (overlay style) the overlays' palette indices:
        ``mask`` (k, size, size), ``concept`` when the row outlines one, and ``heat`` (the
        (k, h, w) maps ``stack`` at their own size, :func:`~ray_dissect.report.heat.heat_values`;
        baked: at tile size, :func:`~ray_dissect.report.tiles.heat_levels`)."""
        size, heat = self.style.size, "heat" in self.style.views
        if not self.style.overlay:
            return tl.compose_row([self.source(i, size) for i, _ in plan.images], masks,
                                  concepts, self.style.views, self.style,
                                  tl.heat_levels(stack, size) if heat else None)
        shown, outline = tl.overlay_indices(masks, concepts, size, self.style)
        views: dict[tl.View, np.ndarray] = {"mask": shown}
        if outline is not None:
            views["concept"] = outline
        if heat:
            views["heat"] = heat_values(stack)
        return views

    def _write_row(self, unit: int, plan: RowPlan, views: dict[str, np.ndarray],
                   thumbs: np.ndarray, infos: list[TileInfo]) -> RowTiles:
        if self.style.overlay:
            return self._write_overlays(unit, plan, views, infos)
        files, shape = {}, (0, 0)
        for view, tiles in views.items():
            name = f"units/{self.key}/{unit}_{plan.key}" + ("" if view == "mask" else f"_{view}")
            pixels = tl.strip(tiles, self.style.size, self.style.gap)
            self._write(f"{name}.jpg", pixels)
            files[view], shape = f"{name}.jpg", pixels.shape[:2]
        return RowTiles(key=plan.key, kind=plan.kind, title=plan.title,
                        range_index=plan.range_index, seed=plan.seed, files=files,
                        width=int(shape[1]), height=int(shape[0]), tiles=infos)

    def _write_overlays(self, unit: int, plan: RowPlan, views: dict[str, np.ndarray],
                        infos: list[TileInfo]) -> RowTiles:
        """A row in the overlay style: its images once for the whole report
        (:meth:`shared_source`), a transparent strip per view over them."""
        size, gap, files = self.style.size, self.style.gap, {}
        for index, _ in plan.images:
            self.shared_source(index)
        for view, indices in views.items():
            name = f"units/{self.key}/{unit}_{plan.key}" + ("" if view == "mask" else f"_{view}")
            ext, data = (("png", encode_heat(indices)) if view == "heat"
                         else ("webp", tl.encode_overlay(indices, size, gap)))
            self._write_bytes(f"{name}.{ext}", data)
            files[view] = f"{name}.{ext}"
        k, heat = len(plan.images), views.get("heat")
        return RowTiles(key=plan.key, kind=plan.kind, title=plan.title,
                        range_index=plan.range_index, seed=plan.seed, files=files,
                        width=k * size + (k - 1) * gap, height=size, tiles=infos, overlay=True,
                        map_shape=None if heat is None else (heat.shape[1], heat.shape[2]))

    def shared_source(self, index: int) -> str:
        """``img/src/<size>/<index>.webp``: image ``index`` at tile size, raw, written once
        for the whole report (every writer writes the same bytes)."""
        rel = f"img/src/{self.style.size}/{index}.webp"
        if rel not in self._shared and not (self.out / rel).exists():
            pixels = self.source(index, self.style.size).base
            self._write_bytes(rel, tl.encode_webp(pixels, self.style.quality))
        self._shared.add(rel)
        return rel

    def _write_bytes(self, rel: str, data: bytes) -> None:
        path = self.out / rel
        storage.makedirs(path.parent)
        storage.write_bytes(path, data)

    def _write(self, rel: str, pixels: np.ndarray, quality: int | None = None) -> None:
        self._write_bytes(rel, tl.encode_jpeg(pixels, quality or self.style.quality))
