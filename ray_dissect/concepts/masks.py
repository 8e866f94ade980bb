"""Unit masks, kept as sparse signatures in label-set space.

A unit's binary mask B over the dataset is: its (h, w) activation map upsampled bilinearly to
the mask size (``align_corners=False``, i.e. half-pixel centres with clamped edges, as PIL and
the references do), then ``lo < value < hi`` strictly. NetDissect's quantile mode is the range
(threshold, +inf). B is never stored densely: since every later count is a count of label
sets (see :mod:`ray_dissect.concepts`), B is kept as pixel counts per (image, label set).
Images whose map never exceeds ``lo`` are skipped before upsampling (bilinear interpolation
cannot exceed the maximum), and invalid images are left out.

The upsampled maps are never materialised either (:func:`range_masks`): only the tiles that
can hold a mask pixel are evaluated, column by column, as runs of rows
(:mod:`ray_dissect.concepts.tiles`), and each run is counted per label set through the block's
per-column label-set changes. A tile whose every pixel is in range by the margin (its exact
extremes, at its four corner pixels, are inside; :func:`~ray_dissect.concepts.tiles.full_tiles`)
is not walked: its per-tile label-set histogram, built once per image block and shared by
every unit and range of the block, is added whole. Pixels too close to a bound to decide in
float64 send their (image, unit) map through torch's full upsampling, so the signatures are
exactly those of
``lo < F.interpolate(...) < hi`` counted pixel by pixel (``benchmarks/legacy_scoring.py`` keeps
that direct implementation; the tests compare both to dense masks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ray_dissect.concepts.tiles import (
    Columns,
    Grid,
    Runs,
    bound_sides,
    full_tiles,
    range_runs,
    tight_candidates,
    tile_columns,
    tile_extremes,
)

PAIRS_PER_CHUNK = 256
TILES_PER_STEP = 16384
TILE_HISTOGRAM_PAYS = 4
"""A whole tile counted from its histogram saves about as much as this many partial tiles
whose one-set runs are not cut; the histograms are built once a chunk saves twice the cost of
walking every tile of the block."""


@dataclass(frozen=True, slots=True)
class UnitMask:
    """The signature of one binary unit mask: |B| split by (image, label set).

    Attributes:
        images: (m,) int64 global image index.
        sets: (m,) int64 global label-set id.
        counts: (m,) int64 number of mask pixels of that image with that label set.
    """

    images: np.ndarray
    sets: np.ndarray
    counts: np.ndarray

    @property
    def area(self) -> int:
        """|B| in pixels."""
        return int(self.counts.sum())

    @staticmethod
    def concat(parts: list[UnitMask]) -> UnitMask:
        """Join signatures of disjoint image blocks."""
        if not parts:
            return UnitMask(*(np.zeros(0, np.int64) for _ in range(3)))
        return UnitMask(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("images", "sets", "counts")))


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, ``align_corners=False``.

    Args:
        maps: (p, h, w) float32.
    Returns:
        (p, sh, sw) float32 (the input itself when the sizes already match).
    """
    if maps.shape[1:] == shape:
        return maps
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[:, None], size=shape,
                            mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


Bounds = tuple[np.ndarray, np.ndarray, bool]
"""One range: (lo, hi, inclusive); lo and hi (k,) per unit or (n, k) per image and unit."""
Extremes = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(low, high, delta) per (pair, tile): :func:`~ray_dissect.concepts.tiles.tile_extremes`."""


def _inside(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int],
            valid: np.ndarray, inclusive: bool
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The upsampled, thresholded masks of the (image, unit) pairs whose peak is in range.

    ``lo`` and ``hi`` are (k,) per unit or (n, k) per image and unit. Yields chunks of
    (image (p,) int64 block index, unit (p,) int64, inside (p, sh, sw) bool); pairs whose peak
    cannot reach the range, and invalid images, are never upsampled.
    """
    n, k = acts.shape[:2]
    lo, hi = np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k))
    pairs_img, pairs_unit = np.nonzero(_fires(acts, lo, inclusive) & valid[:, None])
    for start in range(0, len(pairs_img), PAIRS_PER_CHUNK):
        img = pairs_img[start:start + PAIRS_PER_CHUNK]
        unit = pairs_unit[start:start + PAIRS_PER_CHUNK]
        yield img, unit, _dense_inside(acts[img, unit], lo[img, unit], hi[img, unit], shape,
                                       inclusive)


def _fires(acts: np.ndarray, lo: np.ndarray, inclusive: bool) -> np.ndarray:
    """(n, k) bool: the map's peak reaches ``lo`` (bilinear values never exceed the peak)."""
    peak = acts.reshape(*acts.shape[:2], -1).max(axis=2)
    return (peak >= lo) if inclusive else (peak > lo)


def _dense_inside(maps: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int],
                  inclusive: bool) -> np.ndarray:
    """(p, sh, sw) bool reference mask of p maps (p, h, w) with (p,) bounds, via torch."""
    up = upsample(maps, shape)
    lo_u, hi_u = lo[:, None, None], hi[:, None, None]
    return ((up >= lo_u) & (up <= hi_u)) if inclusive else ((up > lo_u) & (up < hi_u))


def unit_masks(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, set_ids: np.ndarray,
               first_image: int, valid: np.ndarray, inclusive: bool = False) -> list[UnitMask]:
    """Signatures of k unit masks over one block of n images.

    Args:
        acts: (n, k, h, w) float32 activations of images ``first_image : first_image + n``.
        lo, hi: (k,) float64 open range bounds per unit (hi = +inf for a quantile threshold),
            or (n, k) per image and unit.
        set_ids: (n, sh, sw) int64 global label-set id per pixel.
        first_image: global index of the block's first image.
        valid: (n,) bool; invalid images contribute nothing.
        inclusive: ``lo <= value <= hi`` instead of the strict ``lo < value < hi``.

    Returns:
        k :class:`UnitMask`, one per unit, covering this block only; per unit the entries are
        sorted by image, then label set.
    """
    return range_masks(acts, [(lo, hi, inclusive)], set_ids, first_image, valid)[0]


def range_masks(acts: np.ndarray, ranges: Sequence[Bounds], set_ids: np.ndarray,
                first_image: int, valid: np.ndarray) -> list[list[UnitMask]]:
    """:func:`unit_masks` of several ranges at once: masks[r][u], sharing the per-pair work.

    Only the tiles of the upsampled maps that can hold a pixel of some range are evaluated
    (:mod:`ray_dissect.concepts.tiles`); pairs with a pixel too close to a bound to decide
    in float64, or with non-finite values, are upsampled whole by torch as the reference does.
    """
    n, k = acts.shape[:2]
    bounds = [(np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k)), inc)
              for lo, hi, inc in ranges]
    fires = [_fires(acts, lo, inc) & valid[:, None] for lo, _, inc in bounds]
    images, units = np.nonzero(np.logical_or.reduce(fires)) if fires else (
        np.zeros(0, np.int64), np.zeros(0, np.int64))
    counter = _Counter(units, images, set_ids, len(bounds))
    grid = Grid.make(acts.shape[2:], set_ids.shape[1:])
    for start in range(0, len(units), PAIRS_PER_CHUNK):
        sl = slice(start, start + PAIRS_PER_CHUNK)
        _chunk(acts[images[sl], units[sl]], np.arange(len(units))[sl], bounds,
               [f[images[sl], units[sl]] for f in fires], grid, counter)
    return [counter.masks(r, k, first_image) for r in range(len(bounds))]


def _chunk(maps: np.ndarray, pairs: np.ndarray, bounds: list[Bounds], fires: list[np.ndarray],
           grid: Grid, counter: _Counter) -> None:
    """Count the mask pixels of one chunk of pairs (p,) for every range."""
    img, unit = counter.images[pairs], counter.units[pairs]
    finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    corners = grid.corners(maps)
    ext = tile_extremes(grid, corners)
    cands, full = _tiles_of(grid, ext, [(lo[img, unit], hi[img, unit]) for lo, hi, _ in bounds],
                            [f & finite for f in fires], counter)
    redo = [f & ~finite for f in fires]
    found = _walk(grid, corners, ext, cands,
                  [(lo[img, unit], hi[img, unit], inc) for lo, hi, inc in bounds], redo)
    for r, (lo, hi, inc) in enumerate(bounds):
        runs = found[r]
        sel = np.flatnonzero(redo[r])
        q, pix = np.zeros(0, np.int64), np.zeros(0, np.int64)
        tiles = full[r]
        if len(sel):
            dense = _dense_inside(maps[sel], lo[img[sel], unit[sel]], hi[img[sel], unit[sel]],
                                  grid.shape, inc)
            q, pix = np.nonzero(dense.reshape(len(sel), -1))
            keep = np.flatnonzero(~redo[r][runs[0]])
            runs = tuple(a[keep] for a in runs)
            t_keep = np.flatnonzero(~redo[r][tiles[0]])
            tiles = (tiles[0][t_keep], tiles[1][t_keep])
        counter.count(r, pairs, runs, (sel[q], pix), tiles)


def _tiles_of(grid: Grid, ext: Extremes, bounds: list[tuple[np.ndarray, np.ndarray]],
              ok: list[np.ndarray], counter: _Counter
              ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Per range: (p, ty, tx) bool tiles to walk, and the (pair, tile) wholly in range.

    Whole tiles are counted from the block's tile histograms once they are worth building
    (:meth:`_Counter.use_tiles`, judged on the chunk's tiles scaled to every pair of the
    call, as if every chunk were like this one); otherwise they are walked as the others.
    """
    full = [full_tiles(ext, lo, hi) & o[:, None, None] for (lo, hi), o in zip(bounds, ok,
                                                                             strict=True)]
    cands = [tight_candidates(ext, lo, hi) & o[:, None, None]
             for (lo, hi), o in zip(bounds, ok, strict=True)]
    n_full = sum(int(f.sum()) for f in full)
    n_partial = sum(int(c.sum()) for c in cands) - n_full
    scale = len(counter.units) / max(len(ext[0]), 1)
    if not counter.use_tiles(grid, round(n_full * scale), round(n_partial * scale)):
        return cands, [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in bounds]
    width = full[0].shape[2] if full else 0
    whole = []
    for f in full:
        item, ty, tx = np.nonzero(f)
        whole.append((item, ty * width + tx))
    return [c & ~f for c, f in zip(cands, full, strict=True)], whole


def _walk(grid: Grid, corners: np.ndarray, ext: Extremes, cands: list[np.ndarray],
          bounds: list[tuple[np.ndarray, np.ndarray, bool]], redo: list[np.ndarray]
          ) -> list[tuple[np.ndarray, ...]]:
    """Per range, the in-range runs of the candidate tiles as (local pair, first pixel
    row-major in its image, length, tile index ty * tx_count + tx), each (m,) int64; marks the
    pairs with an ambiguous tile in ``redo``."""
    found: list[list[tuple[np.ndarray, ...]]] = [[] for _ in bounds]
    item, ty, tx = np.nonzero(np.logical_or.reduce(cands)) if cands else (
        np.zeros(0, np.int64),) * 3
    for s in range(0, len(item), TILES_PER_STEP):
        sl = slice(s, s + TILES_PER_STEP)
        every = tile_columns(grid, corners, item[sl], ty[sl], tx[sl])
        for r, (lo, hi, inc) in enumerate(bounds):
            sel = cands[r][every.item, every.ty, every.tx]
            if not sel.any():
                continue
            cols = every if sel.all() else every.take(np.flatnonzero(sel))
            lo_c, hi_c = lo[cols.item], hi[cols.item]
            runs = range_runs(grid, cols, lo_c, hi_c, inc, bound_sides(ext, cols, lo_c, hi_c))
            redo[r][cols.item[runs.ambiguous]] = True
            found[r].append(_run_rows(grid, cols, runs))
    return [tuple(np.concatenate([f[i] for f in per] or [np.zeros(0, np.int64)])
                  for i in range(4)) for per in found]


def _run_rows(grid: Grid, cols: Columns, runs: Runs) -> tuple[np.ndarray, ...]:
    """(local pair, first pixel row-major in its image, length, tile index) (m,) int64 of
    the runs of ``cols``."""
    ty, tx = cols.ty[runs.tile], cols.tx[runs.tile]
    rows, cols_ax = grid.rows, grid.cols
    row = rows.pos.reshape(-1)[ty * rows.pos.shape[1] + runs.start]
    col = cols_ax.pos.reshape(-1)[tx * cols_ax.pos.shape[1] + runs.col]
    return (cols.item[runs.tile], row * grid.shape[1] + col, runs.stop - runs.start,
            ty * len(cols_ax.i0) + tx)


class _Counter:
    """Pixel counts per (pair, label set) for each range.

    Mask pixels come as vertical runs (consecutive rows of one column). Per block, the
    label-set changes down each column are listed once (row of each change, column by column)
    with their running count, so a run is cut into its segments of one label set by index
    arithmetic and each segment is counted at once. A chunk's counts are one weighted
    ``bincount`` over (pair, set) bins, with the chunk's sets renumbered so that the bins stay
    few. Pairs are numbered image-major; the entries are finally ordered by unit, image and
    label set, the order :class:`UnitMask` entries keep.
    """

    def __init__(self, units: np.ndarray, images: np.ndarray, set_ids: np.ndarray,
                 n_ranges: int) -> None:
        self.units, self.images = units, images
        sh, sw = set_ids.shape[1:]
        self.pixels, self.width = sh * sw, sw
        self.flat = set_ids.reshape(-1)
        flags = np.zeros(set_ids.shape, dtype=bool)
        flags[:, 1:] = set_ids[:, 1:] != set_ids[:, :-1]
        self.changes = _running_count(flags).reshape(-1)
        by_column = np.flatnonzero(np.ascontiguousarray(flags.transpose(0, 2, 1)))
        self.change_row = by_column % sh
        per_column = np.bincount(by_column // sh, minlength=len(set_ids) * sw)
        self.column_first = np.cumsum(per_column) - per_column
        self.entries: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(n_ranges)]
        self.n_images = set_ids.shape[0]
        self.hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def stride(self) -> int:
        """1 + the block's largest label-set id (computed on first use)."""
        if "_stride" not in self.__dict__:
            self.__dict__["_stride"] = int(self.flat.max(initial=0)) + 1
        return int(self.__dict__["_stride"])

    def use_tiles(self, grid: Grid, n_full: int, n_partial: int) -> bool:
        """Whether to count whole and one-set tiles from the tile histograms, building them
        (about the cost of walking every tile of the block once) when there are enough whole
        tiles (which are then not walked) and partial ones (whose one-set runs are then not
        cut) for that to pay."""
        n_block = self.n_images * len(grid.rows.i0) * len(grid.cols.i0)
        worth = TILE_HISTOGRAM_PAYS * n_full + n_partial
        if self.hist is None and worth >= 2 * n_block:
            self.hist = self._histograms(grid)
        return self.hist is not None

    def _histograms(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tile of the block (image-major, then tile row and column): its label sets and
        pixel counts, as (first entry (t + 1,), sets (e,), counts (e,)) int64, sets ascending
        within a tile."""
        rows, cols = grid.rows, grid.cols
        nty, ntx = len(rows.i0), len(cols.i0)
        col_tile = np.zeros(self.width, np.int64)
        col_tile[cols.pos[cols.ok]] = np.repeat(np.arange(ntx), cols.n_real)
        img, ty, x = (a.ravel() for a in np.meshgrid(
            np.arange(self.n_images), np.arange(nty), np.arange(self.width), indexing="ij"))
        p0 = img * self.pixels + rows.pos[ty, 0] * self.width + x
        run, p, weight = self._segments(p0, rows.n_real[ty])
        tile = ((img * nty + ty) * ntx + col_tile[x])[run]
        keys, inverse = np.unique(tile * self.stride + self.flat[p], return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=weight).astype(np.int64)
        first = np.searchsorted(keys // self.stride, np.arange(self.n_images * nty * ntx + 1))
        return first, keys % self.stride, counts

    def _one_set(self, img: np.ndarray, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(runs (m,) bool in a tile of one label set, that set (m1,) int64) of runs in block
        images ``img`` and tiles ``tile``; no run when there are no histograms."""
        if self.hist is None:
            return np.zeros(len(img), bool), np.zeros(0, np.int64)
        first, sets, _ = self.hist
        t = img * ((len(first) - 1) // self.n_images) + tile
        one = first[t + 1] - first[t] == 1
        return one, sets[first[t[one]]]

    def _tile_entries(self, img: np.ndarray, tiles: tuple[np.ndarray, np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local pair, set, count) of the histogram entries of whole tiles (local pair, tile
        index ty * tx_count + tx)."""
        local, tile = tiles
        if self.hist is None or not len(local):
            return (np.zeros(0, np.int64),) * 3
        first, sets, counts = self.hist
        per_image = (len(first) - 1) // self.n_images
        t = img[local] * per_image + tile
        n = first[t + 1] - first[t]
        entry = np.arange(int(n.sum())) + np.repeat(first[t] - (np.cumsum(n) - n), n)
        return np.repeat(local, n), sets[entry], counts[entry]

    def _segments(self, p0: np.ndarray, length: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(run, first pixel (block-flat), length), each (m,) int64, of the one-set segments
        of vertical runs starting at block-flat pixels ``p0`` (r,) with ``length`` (r,);
        a run without a label-set change is its own segment (most are)."""
        c0 = self.changes[p0]
        count = self.changes[p0 + (length - 1) * self.width] - c0 + 1
        multi = np.flatnonzero(count > 1)
        if not len(multi):
            return np.arange(len(p0)), p0, length
        single = np.flatnonzero(count == 1)
        run, p, weight = self._cut(p0[multi], length[multi], c0[multi], count[multi])
        return (np.concatenate([single, multi[run]]), np.concatenate([p0[single], p]),
                np.concatenate([length[single], weight]))

    def _cut(self, p0: np.ndarray, length: np.ndarray, c0: np.ndarray, count: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_segments` of runs crossing ``count - 1`` label-set changes, ``c0`` the
        running change count at their first pixel."""
        img, rem = np.divmod(p0, self.pixels)
        y0, x = np.divmod(rem, self.width)
        run = np.repeat(np.arange(len(p0)), count)
        j = np.arange(len(run)) - np.repeat(np.cumsum(count) - count, count)
        base = (self.column_first[img * self.width + x] + c0)[run] + j
        last = max(len(self.change_row) - 1, 0)
        rows = self.change_row if len(self.change_row) else np.zeros(1, np.int64)
        start = np.where(j == 0, y0[run], rows[np.clip(base - 1, 0, last)])
        stop = np.where(j == count[run] - 1, (y0 + length)[run], rows[np.clip(base, 0, last)])
        return run, p0[run] + (start - y0[run]) * self.width, stop - start

    def count(self, r: int, pairs: np.ndarray, runs: tuple[np.ndarray, ...],
              pixels: tuple[np.ndarray, np.ndarray],
              tiles: tuple[np.ndarray, np.ndarray]) -> None:
        """Count range ``r``'s mask pixels of a chunk of consecutive pair numbers ``pairs``.

        Args:
            runs: (local pair, first pixel row-major in its image, length, tile index) of
                vertical runs; a run in a tile of one label set (by the tile histograms) is
                counted whole.
            pixels: (local pair, pixel row-major) of single pixels.
            tiles: (local pair, tile index) of whole tiles (see :meth:`_tile_entries`).
        """
        img = self.images[pairs]
        local, pix, length, tile = runs
        one, one_set = self._one_set(img[local], tile)
        if len(one_set):
            cut = np.flatnonzero(~one)
            local, pix, length, one_local, one_length = (
                local[cut], pix[cut], length[cut], local[one], length[one])
        else:
            one_local = one_length = np.zeros(0, np.int64)
        run, p, weight = self._segments(img[local] * self.pixels + pix, length)
        t_loc, t_sets, t_counts = self._tile_entries(img, tiles)
        loc = np.concatenate([local[run], one_local, pixels[0], t_loc])
        sets = np.concatenate([self.flat[p], one_set,
                               self.flat[img[pixels[0]] * self.pixels + pixels[1]], t_sets])
        weight = np.concatenate([weight, one_length, np.ones(len(pixels[0]), np.int64),
                                 t_counts])
        self._add(r, pairs, loc, sets, weight)

    def _add(self, r: int, pairs: np.ndarray, loc: np.ndarray, sets: np.ndarray,
             weight: np.ndarray) -> None:
        """Sum ``weight`` per (local pair, set) (m,) into range ``r``'s entries."""
        seen = np.zeros(int(sets.max(initial=0)) + 1, dtype=bool)
        seen[sets] = True
        chunk_sets = np.flatnonzero(seen)
        n_sets = max(len(chunk_sets), 1)
        bins = np.bincount(loc * n_sets + (np.cumsum(seen) - 1)[sets], weights=weight,
                           minlength=len(pairs) * n_sets)
        nz = np.flatnonzero(bins)
        self.entries[r].append((pairs[nz // n_sets], chunk_sets[nz % n_sets],
                                bins[nz].astype(np.int64)))

    def masks(self, r: int, k: int, first_image: int) -> list[UnitMask]:
        """The k signatures of range ``r`` (entries reordered unit-major)."""
        pair, sets, counts = (np.concatenate([e[i] for e in self.entries[r]]
                                             or [np.zeros(0, np.int64)]) for i in range(3))
        order = np.lexsort((sets, self.images[pair], self.units[pair]))
        pair, sets, counts = pair[order], sets[order].astype(np.int64), counts[order]
        cut = np.searchsorted(self.units[pair], np.arange(k + 1))
        images = self.images[pair].astype(np.int64) + first_image
        counts = counts.astype(np.int64)
        return [UnitMask(images[a:b], sets[a:b], counts[a:b]) for a, b in pairwise(cut.tolist())]


def _running_count(flags: np.ndarray) -> np.ndarray:
    """(n, sh, sw) int8/int16/int32 number of True flags at or above each pixel of its column
    (row by row: much faster than ``cumsum`` along a middle axis; the narrowest type that
    holds sh, for less memory traffic)."""
    sh = flags.shape[1]
    out: np.ndarray = flags.astype(np.int8 if sh < 2 ** 7 else np.int16 if sh < 2 ** 15
                                   else np.int32)
    for y in range(1, out.shape[1]):
        np.add(out[:, y], out[:, y - 1], out=out[:, y])
    return out


def mask_pixels(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int],
                valid: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """Pixels of each image's unit mask (the same masks as :func:`unit_masks`, uncounted by
    label set).

    Args:
        acts: (n, k, h, w) float32; lo, hi: (k,) float64 range bounds; shape: (sh, sw);
            valid: (n,) bool.

    Returns:
        (n, k) int64 mask pixels per image and unit (0 for invalid images).
    """
    n, k = acts.shape[:2]
    out = np.zeros((n, k), dtype=np.int64)
    for img, unit, inside in _inside(acts, lo, hi, shape, valid, inclusive):
        np.add.at(out, (img, unit), inside.reshape(len(inside), -1).sum(axis=1))
    return out
