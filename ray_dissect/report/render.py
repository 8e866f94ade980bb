"""The report's work unit: render the tiles of one block of units (report.md §3.9, R2).

:func:`render_block` (job directory, layer, units [u0, u1)) reads the block's records, one pass
over the block's activations (every image, those units) and the source images and label maps
of the images the records select, and writes:

- ``img/<layer>/<unit>.jpg``: the unit's sprite for its card (one row per range, or one for
  NetDissect, ``sprite_tiles`` thumbnails each);
- ``units/<layer>/<unit>_<row>.jpg`` (+ ``_raw``, ``_concept``): full-size strips for the unit
  page, one per row (top activations, each range's top in-range images and random samples);
- ``_render/<layer>/<u0>-<u1>.json``: what the pages need (captions, sizes, the 32-bin
  activation histogram of each unit), then its done marker ``.done`` holding a digest of the
  inputs. A block whose marker holds the same digest is not redone; everything is written
  with fixed settings, so a rerun writes the same bytes.

It is a pure function of the job directory (no Ray, no driver state): the driver may call it
in-process or as one task per block. Which images a row shows comes from the records
(``UnitRecord.top_images``, ``Explanation.top_images`` and ``Explanation.samples``, schema v3;
records without them get no tiles, only histograms).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ray_dissect import __version__, storage
from ray_dissect.datasets.base import BadSampleError, ConceptDataset
from ray_dissect.job.layout import done_marker, layer_key
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report import tiles as tl
from ray_dissect.report.results import JobResults, open_job
from ray_dissect.storage import AnyPath

BLOCK_UNITS = 64
HIST_BINS = 32
CHUNK_BYTES = 64 << 20
Pages = Literal["all", "interpretable"]
RowKind = Literal["top", "range", "samples"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TileInfo(_Model):
    """One tile's caption: the image, its max activation, in-range pixels, IoU with the
    concept mask (the label's, or the range formula's) on that image."""

    index: int
    image: str
    value: float | None
    pixels: int
    iou: float | None


class RowTiles(_Model):
    """One row of tiles of a unit (a full-size strip per view on its unit page)."""

    key: str
    kind: RowKind
    title: str
    range_index: int | None
    seed: int | None
    files: dict[str, str]
    width: int
    height: int
    tiles: list[TileInfo]


class Histogram(_Model):
    """A unit's activation histogram over valid images: ``bins`` equal bins over
    [min, max] of its finite non-zero values (``edges`` empty when there is none); exact
    zeros and non-finite values are counted apart."""

    edges: list[float]
    counts: list[int]
    zeros: int
    nonfinite: int


class UnitTiles(_Model):
    """What the pages need about one unit's tiles."""

    unit: int
    page: bool
    sprite: str | None
    sprite_width: int
    sprite_height: int
    sprite_rows: list[str]
    rows: list[RowTiles]
    histogram: Histogram


class BlockTiles(_Model):
    """The result of :func:`render_block`."""

    layer: str
    units: tuple[int, int]
    digest: str
    tiles: list[UnitTiles]


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


def _images(items: Any) -> tuple[tuple[int, str], ...]:
    return tuple((int(t.index), str(t.image)) for t in items or [])


def _node(formula: Any) -> dict[str, Any] | None:
    if formula is None:
        return None
    return formula if isinstance(formula, dict) else dict(formula.model_dump())


def row_plans(rec: UnitRecord) -> list[RowPlan]:
    """The rows of a record's tiles: top activations (NetDissect's quantile mask, label
    outlined), then per range its top in-range images and its random samples."""
    rows = []
    tops = _images(getattr(rec, "top_images", None))
    if tops and rec.threshold is not None:
        leaf = ({"op": "leaf", "concept": rec.label.number, "name": rec.label.name}
                if rec.label else None)
        rows.append(RowPlan("top", "top", "top activations (spatial max)", None,
                            rec.threshold, None, False, leaf, tops))
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


def block_digest(layer: str, units: tuple[int, int], plans: list[list[RowPlan]],
                 pages: list[bool], style: tl.TileStyle) -> str:
    """A digest of everything a block's output depends on (its done marker holds it)."""
    data = {"layer": layer, "units": units, "rows": [[asdict(p) for p in u] for u in plans],
            "pages": pages, "style": asdict(style), "version": __version__}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def meta_path(out: AnyPath, layer: str, units: tuple[int, int]) -> AnyPath:
    """Where a block's :class:`BlockTiles` JSON is kept (its done marker beside it)."""
    return out / "_render" / layer_key(layer) / f"{units[0]:07d}-{units[1]:07d}.json"


def render_block(job: str | AnyPath | JobResults, layer: str, units: tuple[int, int],
                 out: str | AnyPath | None = None, style: tl.TileStyle = tl.DEFAULT_STYLE,
                 pages: Pages = "all") -> BlockTiles:
    """Render units [u0, u1) of ``layer`` (see the module docstring); resumable.

    Args:
        job: the job directory (path or URI) or its opened :class:`JobResults`.
        out: the report directory (default ``DIR/report``).
        style: tile geometry and look.
        pages: which units get unit pages (and full-size strips).
    """
    results = job if isinstance(job, JobResults) else open_job(job)
    root = storage.location(out) if out is not None else results.root / "report"
    records = results.records(layer)[units[0]:units[1]]
    plans = [row_plans(r) for r in records]
    t = results.spec.method.iou_threshold
    page = [wants_page(r, pages, t) for r in records]
    digest = block_digest(layer, units, plans, page, style)
    meta = meta_path(root, layer, units)
    if done_marker(meta).exists() and storage.read_text(done_marker(meta)) == digest:
        return BlockTiles.model_validate_json(storage.read_text(meta))
    hists, maps = _scan(results, layer, units, plans)
    painter = _Painter(results.dataset, style, root, layer)
    done = [painter.unit(r.unit, p, pg, maps, h)
            for r, p, pg, h in zip(records, plans, page, hists, strict=True)]
    block = BlockTiles(layer=layer, units=units, digest=digest, tiles=done)
    storage.makedirs(meta.parent)
    storage.write_text(meta, block.model_dump_json() + "\n")
    storage.write_text(done_marker(meta), digest)
    return block


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
    lo, hi, maps = _ranges_and_maps(acts, units, chunks, bad, wanted)
    counts = np.zeros((u1 - u0, HIST_BINS), np.int64)
    zeros, nonfinite = np.zeros(u1 - u0, np.int64), np.zeros(u1 - u0, np.int64)
    for s, e in chunks:
        block = np.asarray(acts[s:e, u0:u1], dtype=np.float32)[~bad[s:e]]
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


def _ranges_and_maps(acts: Any, units: tuple[int, int], chunks: list[tuple[int, int]],
                     bad: np.ndarray, wanted: set[tuple[int, int]]
                     ) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """Per unit min and max of its finite non-zero values (inf/-inf when none), and the maps
    of the wanted (image, unit) pairs."""
    u0, u1 = units
    lo, hi = np.full(u1 - u0, np.inf), np.full(u1 - u0, -np.inf)
    maps: dict[tuple[int, int], np.ndarray] = {}
    for s, e in chunks:
        block = np.asarray(acts[s:e, u0:u1], dtype=np.float32)
        for i, u in wanted:
            if s <= i < e:
                maps[(i, u)] = block[i - s, u - u0].copy()
        flat = block[~bad[s:e]].transpose(1, 0, 2, 3).reshape(u1 - u0, -1)
        ok = np.isfinite(flat) & (flat != 0)
        lo = np.minimum(lo, np.where(ok, flat, np.inf).min(axis=1, initial=np.inf))
        hi = np.maximum(hi, np.where(ok, flat, -np.inf).max(axis=1, initial=-np.inf))
    return lo, hi, maps


class _Painter:
    """Draws and writes one block's tiles (images and label maps decoded once per block)."""

    def __init__(self, dataset: ConceptDataset, style: tl.TileStyle, out: AnyPath, layer: str
                 ) -> None:
        self.dataset, self.style, self.out, self.key = dataset, style, out, layer_key(layer)
        self._images: dict[int, np.ndarray] = {}
        self._labels: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def image(self, index: int) -> np.ndarray:
        if index not in self._images:
            try:
                self._images[index] = self.dataset.read_image(index)
            except BadSampleError:
                self._images[index] = np.full((8, 8, 3), 128, np.uint8)
        return self._images[index]

    def labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._labels:
            try:
                self._labels[index] = self.dataset.read_labels(index)
            except BadSampleError:
                shape = self.dataset.mask_shape
                self._labels[index] = (np.zeros((0, *shape), np.int32), np.zeros(0, np.int32))
        return self._labels[index]

    def unit(self, unit: int, plans: list[RowPlan], page: bool,
             maps: dict[tuple[int, int], np.ndarray], hist: Histogram) -> UnitTiles:
        """Draw a unit's rows; write its sprite and (with a page) its strips."""
        drawn = {p.key: self._row(unit, p, maps) for p in plans}
        rows = [self._write_row(unit, p, *drawn[p.key]) for p in plans] if page else []
        chosen = sprite_rows(plans)
        sprite, width, height = None, 0, 0
        if chosen:
            pixels = tl.sprite([drawn[p.key][1] for p in chosen], self.style)
            sprite = f"img/{self.key}/{unit}.jpg"
            self._write(sprite, pixels)
            height, width = pixels.shape[:2]
        return UnitTiles(unit=unit, page=page, sprite=sprite, sprite_width=width,
                         sprite_height=height, sprite_rows=[p.key for p in chosen], rows=rows,
                         histogram=hist)

    def _row(self, unit: int, plan: RowPlan, maps: dict[tuple[int, int], np.ndarray]
             ) -> tuple[dict[str, np.ndarray], np.ndarray, list[TileInfo]]:
        """Per view the full-size tiles, the sprite thumbnails, and the captions."""
        stack = np.stack([maps[(i, unit)] for i, _ in plan.images])
        masks = tl.range_mask(stack, self.dataset.mask_shape, plan.lo, plan.hi, plan.inclusive)
        images = [self.image(i) for i, _ in plan.images]
        concepts = (np.stack([tl.formula_mask(plan.concept, *self.labels(i))
                              for i, _ in plan.images]) if plan.concept is not None else None)
        views = tl.compose_row(images, masks, concepts, self.style.size, self.style.views,
                               self.style)
        thumbs = tl.compose_row(images[: self.style.sprite_tiles],
                                masks[: self.style.sprite_tiles], None, self.style.thumb,
                                ["mask"], self.style)["mask"]
        peaks = stack.reshape(len(stack), -1).max(axis=1)
        infos = [TileInfo(index=index, image=name,
                          value=float(peak) if np.isfinite(peak) else None,
                          pixels=int(mask.sum()),
                          iou=tl.tile_iou(mask, concepts[j]) if concepts is not None else None)
                 for j, ((index, name), peak, mask) in enumerate(
                     zip(plan.images, peaks, masks, strict=True))]
        return {str(v): tiles for v, tiles in views.items()}, thumbs, infos

    def _write_row(self, unit: int, plan: RowPlan, views: dict[str, np.ndarray],
                   thumbs: np.ndarray, infos: list[TileInfo]) -> RowTiles:
        files, shape = {}, (0, 0)
        for view, tiles in views.items():
            name = f"units/{self.key}/{unit}_{plan.key}" + ("" if view == "mask" else f"_{view}")
            pixels = tl.strip(tiles, self.style.size, self.style.gap)
            self._write(f"{name}.jpg", pixels)
            files[view], shape = f"{name}.jpg", pixels.shape[:2]
        return RowTiles(key=plan.key, kind=plan.kind, title=plan.title,
                        range_index=plan.range_index, seed=plan.seed, files=files,
                        width=int(shape[1]), height=int(shape[0]), tiles=infos)

    def _write(self, rel: str, pixels: np.ndarray) -> None:
        path = self.out / rel
        storage.makedirs(path.parent)
        storage.write_bytes(path, tl.encode_jpeg(pixels, self.style.quality))
