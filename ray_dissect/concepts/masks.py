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
per-column label-set changes (:mod:`ray_dissect.concepts.counting`). A tile whose every pixel
is in range by the margin (its exact extremes, at its four corner pixels, are inside;
:func:`~ray_dissect.concepts.tiles.full_tiles`) is not walked: its per-tile label-set
histogram, built once per image block and shared by every unit and range of the block, is
added whole. Pixels too close to a bound to decide in float64 send their (image, unit) map
through torch's full upsampling, so the signatures are exactly those of
``lo < F.interpolate(...) < hi`` counted pixel by pixel (``benchmarks/legacy_scoring.py`` keeps
that direct implementation; the tests compare both to dense masks).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect.concepts.counting import SetCounter, ordered_signatures
from ray_dissect.concepts.kernels import count_ranges, kernel_name
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


@dataclass(frozen=True, slots=True)
class UnitMask:
    """The signature of one binary unit mask: |B| split by (image, label set).

    Attributes:
        images: (m,) int32 global image index.
        sets: (m,) int32 global label-set id.
        counts: (m,) int32 number of mask pixels of that image with that label set.
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
            return UnitMask(*(np.zeros(0, np.int32) for _ in range(3)))
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


def firing_pairs(acts: np.ndarray, ranges: Sequence[tuple[Any, Any, bool]], valid: np.ndarray
                 ) -> tuple[list[Bounds], list[np.ndarray], np.ndarray, np.ndarray]:
    """Each range's bounds broadcast to (n, k) float64, its (n, k) bool pairs whose peak
    reaches it (valid images only), and the (image, unit) int64 pairs any range can reach."""
    n, k = acts.shape[:2]
    bounds = [(np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k)), inc)
              for lo, hi, inc in ranges]
    peak = acts.reshape(n, k, -1).max(axis=2)
    fires = [_fires(acts, lo, inc, peak) & valid[:, None] for lo, _, inc in bounds]
    images, units = np.nonzero(np.logical_or.reduce(fires)) if fires else (
        np.zeros(0, np.int64), np.zeros(0, np.int64))
    return bounds, fires, images, units


def _fires(acts: np.ndarray, lo: np.ndarray, inclusive: bool,
           peak: np.ndarray | None = None) -> np.ndarray:
    """(n, k) bool: the map's peak (given, or computed) reaches ``lo`` (bilinear values never
    exceed the peak)."""
    if peak is None:
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
    bounds, fires, images, units = firing_pairs(acts, ranges, valid)
    grid = Grid.make(acts.shape[2:], set_ids.shape[1:])
    count = _compiled if kernel_name() == "numba" else _tile_walk
    entries = count(acts, images, units, bounds, [f[images, units] for f in fires], grid,
                    set_ids)
    k = acts.shape[1]
    return [[UnitMask(*sig) for sig in ordered_signatures(units, images, e, k, first_image)]
            for e in entries]


Entries = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""(pair (m,), global set (m,), count (m,)) int64 of one range, pairs numbered as given."""


def _tile_walk(acts: np.ndarray, images: np.ndarray, units: np.ndarray, bounds: list[Bounds],
               fires: list[np.ndarray], grid: Grid, set_ids: np.ndarray) -> list[Entries]:
    """Per range, the (pair, set) counts of the pairs (images, units) (p,), by the numpy
    tile walk (the reference); ``fires``: per range (p,) bool."""
    counter = SetCounter(units, images, set_ids, len(bounds))
    for start in range(0, len(units), PAIRS_PER_CHUNK):
        sl = slice(start, start + PAIRS_PER_CHUNK)
        _chunk(acts[images[sl], units[sl]], np.arange(len(units))[sl], bounds,
               [f[sl] for f in fires], grid, counter)
    return counter.entries


def _compiled(acts: np.ndarray, images: np.ndarray, units: np.ndarray, bounds: list[Bounds],
              fires: list[np.ndarray], grid: Grid, set_ids: np.ndarray) -> list[Entries]:
    """:func:`_tile_walk` by the compiled per-pixel kernel, the (pair, range)s it cannot
    decide upsampled whole by torch and counted as ``lo < value < hi``."""
    if not bounds:
        return []
    found = count_ranges(acts, images, units, bounds, fires, grid, set_ids)
    for r, (lo, hi, inc) in enumerate(bounds):
        sel = np.flatnonzero(found.redo[:, r])
        for start in range(0, len(sel), PAIRS_PER_CHUNK):
            at = sel[start:start + PAIRS_PER_CHUNK]
            img, unit = images[at], units[at]
            found.recount(images, r, at, upsample(acts[img, unit], grid.shape),
                          (lo[img, unit], hi[img, unit], inc))
    return [[e] for e in found.entries(images)]


def signature_bound(acts: np.ndarray, ranges: Sequence[Bounds], valid: np.ndarray,
                    set_sizes: np.ndarray) -> np.ndarray:
    """An upper bound on the entries :func:`range_masks` gives each unit over all ``ranges``.

    A pair (image, unit) enters a range's signature only when its map's peak reaches the
    range (the test :func:`range_masks` makes), and then with at most one entry per label set
    of the image. Reads the maps only, so it costs a small part of the masks.

    Args:
        acts: (n, k, h, w) float32; ranges: as for :func:`range_masks`.
        valid: (n,) bool; set_sizes: (n,) int64 number of label sets in each image.

    Returns:
        (k,) int64 entries at most, summed over the ranges.
    """
    n, k = acts.shape[:2]
    peak = acts.reshape(n, k, -1).max(axis=2)
    total = np.zeros(k, dtype=np.int64)
    for lo, _, inclusive in ranges:
        fires = _fires(acts, np.broadcast_to(lo, (n, k)), inclusive, peak) & valid[:, None]
        total += set_sizes.astype(np.int64) @ fires
    return total


def _chunk(maps: np.ndarray, pairs: np.ndarray, bounds: list[Bounds], fires: list[np.ndarray],
           grid: Grid, counter: SetCounter) -> None:
    """Count the mask pixels of one chunk of pairs (p,) for every range."""
    img, unit = counter.images[pairs], counter.units[pairs]
    finite = np.isfinite(maps.reshape(len(maps), -1)).all(axis=1)
    corners = grid.corners(maps)
    lows = np.fmin.reduce([lo[img, unit] for lo, _, _ in bounds]) if bounds else np.inf
    ext = _extremes(grid, corners, lows - 2.0 * grid.margin * np.abs(maps).max(axis=(1, 2)))
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


def _extremes(grid: Grid, corners: np.ndarray, reach: np.ndarray) -> Extremes:
    """:func:`~ray_dissect.concepts.tiles.tile_extremes`, evaluated only for the tiles whose
    largest corner is not below ``reach`` (p,) (the least lower bound less twice the pair's
    largest margin); the others, which then hold no pixel within the margin of any range,
    get (-inf, -inf, 0): neither candidates nor whole. All are evaluated when most reach."""
    near = ~(corners.max(axis=0) < reach[:, None, None])  # NaN: evaluated
    if 3 * np.count_nonzero(near) > near.size:
        return tile_extremes(grid, corners)
    at = np.flatnonzero(near)
    ty, tx = np.divmod(at % (near.shape[1] * near.shape[2]), near.shape[2])
    low, high, delta = np.full(near.size, -np.inf), np.full(near.size, -np.inf), np.zeros(near.size)
    low[at], high[at], delta[at] = tile_extremes(grid, corners.reshape(4, -1)[:, at], (ty, tx))
    return low.reshape(near.shape), high.reshape(near.shape), delta.reshape(near.shape)


def _tiles_of(grid: Grid, ext: Extremes, bounds: list[tuple[np.ndarray, np.ndarray]],
              ok: list[np.ndarray], counter: SetCounter
              ) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """Per range: (p, ty, tx) bool tiles to walk, and the (pair, tile) wholly in range.

    Whole tiles are counted from the block's tile histograms once they are worth building
    (:meth:`SetCounter.use_tiles`, judged on the chunk's tiles scaled to every pair of the
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
