"""Thresholded bilinear upsampling evaluated only where it can matter, exactly.

The reference mask is ``lo < up < hi`` (or ``<=``) on torch's float32 bilinear upsampling
(``align_corners=False``). Every output pixel is a convex combination of the 2 x 2 source
values of its cell, so the output plane splits into *tiles* (runs of at most ``T`` output rows
by ``T`` output columns sharing one source cell). A tile whose four corners are all below
``lo`` (or all above ``hi``) by more than a margin holds no mask pixel; only the other tiles
are evaluated, in float64 from the same formula. float64 differs from torch's float32 result by
far less than the margin ``delta = 2**-14 * max|corner|`` (a few float32 roundings and
float32 weights, each within ``2**-22`` relative); a pixel whose float64 value lies within
``delta`` of a bound is *ambiguous*, and the caller recomputes its whole (image, unit) map with
torch. Every decision taken here is therefore the one torch's float32 values give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ROUNDING = 16 * 2.0 ** -24
"""Bound on torch's float32 rounding error relative to the largest corner (at most 6
roundings of values below it; 16 leaves room)."""


@dataclass(frozen=True)
class AxisTiles:
    """Tiles along one axis of an ``n_in -> n_out`` upsampling (T = ceil(n_out / n_in)).

    Attributes:
        i0, i1: (t,) int64 source indices of each tile's cell.
        pos: (t, T) int64 output position of each slot (clipped for padding slots).
        ok: (t, T) bool, slot is a real output position; n_real: (t,) int64 real slots.
        lam: (t, T) float64 weight of i1 (that of i0 is 1 - lam), ascending along a tile;
            0 on padding.
        grid: (t * T,) float64 ``lam + 4 * tile``, 3 + 4 * tile on padding: ascending, for
            one vectorised searchsorted over every tile.
        weight_error: bound on |lam - torch's float32 weights| (including 1 - lam).
    """

    i0: np.ndarray
    i1: np.ndarray
    pos: np.ndarray
    ok: np.ndarray
    n_real: np.ndarray
    lam: np.ndarray
    grid: np.ndarray
    weight_error: float

    @property
    def local_lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The cell table of :func:`_splits` (built on first use)."""
        cached = self.__dict__.get("_local_lookup")
        if cached is None:
            cached = (_local_lookup(self),)
            object.__setattr__(self, "_local_lookup", cached)
        return cached[0]

    @classmethod
    def make(cls, n_in: int, n_out: int) -> AxisTiles:
        """Half-pixel source coordinates clamped at the edges, as torch computes them."""
        real = np.maximum(n_in / n_out * (np.arange(n_out) + 0.5) - 0.5, 0.0)
        src0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
        lam = np.clip(real - src0, 0.0, 1.0)
        size = -(-n_out // n_in)
        starts = np.array(_tile_starts(src0, size), dtype=np.int64)
        stops = np.append(starts[1:], n_out)
        pos = starts[:, None] + np.arange(size)[None, :]
        ok = pos < stops[:, None]
        pos = np.where(ok, pos, starts[:, None])
        i0 = src0[starts]
        tile_lam = np.where(ok, lam[pos], 0.0)
        grid = (np.where(ok, tile_lam, 3.0) + 4.0 * np.arange(len(starts))[:, None]).ravel()
        return cls(i0, i0 + (i0 < n_in - 1), pos, ok, ok.sum(axis=1), tile_lam, grid,
                   _weight_error(n_in, n_out, lam))


def _weight_error(n_in: int, n_out: int, lam: np.ndarray) -> float:
    """Largest gap between ``lam`` and the float32 weights torch may compute (float32 or
    float64 scale, fused or separate multiply-subtract, then ``1 - lam`` rounded)."""
    x = np.arange(n_out) + 0.5
    s32 = np.float32(n_in) / np.float32(n_out)
    x32 = x.astype(np.float32)
    reals = [s32 * x32 - np.float32(0.5),
             (np.float64(s32) * x32.astype(np.float64) - 0.5).astype(np.float32),
             (n_in / n_out * x - 0.5).astype(np.float32)]
    gap = 0.0
    for real in reals:
        r = np.maximum(real.astype(np.float64), 0.0)
        lam32 = np.clip(r - np.minimum(np.floor(r), n_in - 1), 0.0, 1.0).astype(np.float32)
        w0 = (np.float32(1.0) - lam32).astype(np.float64)
        gap = max(gap, float(np.abs(lam32 - lam).max(initial=0.0)),
                  float(np.abs(w0 - (1.0 - lam)).max(initial=0.0)))
    return gap + 2.0 ** -24


def _tile_starts(src0: np.ndarray, size: int) -> list[int]:
    """Output positions where a tile starts: a new source cell, or ``size`` slots filled."""
    starts = [0]
    for s in range(1, len(src0)):
        if src0[s] != src0[s - 1] or s - starts[-1] == size:
            starts.append(s)
    return starts


@dataclass(frozen=True)
class Grid:
    """Tiles of a (h, w) -> (sh, sw) upsampling: the product of both axes' tiles."""

    rows: AxisTiles
    cols: AxisTiles
    shape: tuple[int, int]

    @property
    def margin(self) -> float:
        """Decision margin relative to the largest corner of a tile."""
        return ROUNDING + 4.0 * (self.rows.weight_error + self.cols.weight_error)

    @classmethod
    def make(cls, src: tuple[int, int], shape: tuple[int, int]) -> Grid:
        return cls(AxisTiles.make(src[0], shape[0]), AxisTiles.make(src[1], shape[1]), shape)

    def corners(self, maps: np.ndarray) -> np.ndarray:
        """(4, p, ty, tx) float64 corner values (i0,i0), (i0,i1), (i1,i0), (i1,i1) per tile."""
        m = maps.astype(np.float64)
        r, c = self.rows, self.cols
        return np.stack([m[:, ri][:, :, ci] for ri in (r.i0, r.i1) for ci in (c.i0, c.i1)])


@dataclass(frozen=True)
class Columns:
    """The columns of some tiles, each a linear function of the row weight.

    Along a tile column, ``value(lam) = top + lam * (bottom - top)``: monotone in the row
    weight ``lam``, so the rows in any interval of values are an interval of the tile's rows.

    Attributes:
        item, ty, tx: (q,) int64 pair index and tile coordinates.
        top, step: (q, T) float64 value at lam = 0 and its slope in lam.
        delta: (q,) float64 margin; exact: (q,) bool all corners 0 (the value is exactly 0).
    """

    item: np.ndarray
    ty: np.ndarray
    tx: np.ndarray
    top: np.ndarray
    step: np.ndarray
    delta: np.ndarray
    exact: np.ndarray

    def take(self, idx: np.ndarray) -> Columns:
        """The tiles ``idx`` only."""
        return Columns(self.item[idx], self.ty[idx], self.tx[idx], self.top[idx],
                       self.step[idx], self.delta[idx], self.exact[idx])


def tile_columns(grid: Grid, corners: np.ndarray, item: np.ndarray, ty: np.ndarray,
                 tx: np.ndarray) -> Columns:
    """Columns of the tiles (item, ty, tx); ``corners`` is (4, p, ty, tx) from
    :meth:`Grid.corners`."""
    a, b, c, d = (corners[j, item, ty, tx][:, None] for j in range(4))
    margin = grid.margin
    mu = grid.cols.lam[tx]
    top = a + mu * (b - a)
    bottom = c + mu * (d - c)
    peak = np.abs(corners[:, item, ty, tx]).max(axis=0)
    return Columns(item, ty, tx, top, bottom - top, margin * peak, peak == 0)


@dataclass(frozen=True)
class Runs:
    """Row runs [start, stop) of tile columns that are in a range.

    Attributes:
        tile: (m,) int64 index into the :class:`Columns`; col: (m,) int64 column slot;
        start, stop: (m,) int64 row slots.
        ambiguous: (q,) bool per tile, a pixel within the margin of a bound.
    """

    tile: np.ndarray
    col: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    ambiguous: np.ndarray


CELLS_PER_UNIT = 1024


def _cells(values: np.ndarray) -> np.ndarray:
    """Cell of each value of the concatenated tile grid (monotone in the value)."""
    return np.floor((values + 1.0) * CELLS_PER_UNIT).astype(np.int64)


def _lookup(axis: AxisTiles) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per cell: grid values in earlier cells, the cell's one distinct value (+inf if none)
    and its multiplicity; None when a cell would hold two distinct values."""
    cells = _cells(axis.grid)
    n_cells = int(cells[-1]) + 2 if len(cells) else 1
    if np.any((cells[1:] == cells[:-1]) & (axis.grid[1:] != axis.grid[:-1])):
        return None
    every = np.arange(n_cells)
    before = np.searchsorted(cells, every, side="left")
    mult = np.searchsorted(cells, every, side="right") - before
    value = np.where(mult > 0, axis.grid[np.minimum(before, len(cells) - 1)], np.inf)
    return before, value, mult


def _local_lookup(axis: AxisTiles) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per cell, counted within the cell's own tile: the real slots in earlier cells, those up
    to the cell's value, and that value scaled as cells are, ``(grid + 1) * CELLS_PER_UNIT``
    (+inf if none), all (cells,); None when :func:`_lookup` is None."""
    if (table := _lookup(axis)) is None:
        return None
    before, value, mult = table
    pad = max(4 * len(axis.i0) * CELLS_PER_UNIT - len(before), 0)  # up to the last crossing
    before = np.append(before, np.full(pad, len(axis.grid)))
    value, mult = np.append(value, np.full(pad, np.inf)), np.append(mult, np.zeros(pad, int))
    local = before - np.arange(len(before)) // (4 * CELLS_PER_UNIT) * axis.pos.shape[1]
    small = _slot_dtype(axis)  # splits are slot counts: narrow arrays, less memory traffic
    return local.astype(small), (local + mult).astype(small), (value + 1.0) * CELLS_PER_UNIT


def _slot_dtype(axis: AxisTiles) -> type[np.signedinteger]:
    """The narrowest signed integer type holding a tile's slot counts (0 to T)."""
    return next(t for t in (np.int8, np.int16, np.int32) if axis.pos.shape[1] < np.iinfo(t).max)


def _splits(grid: Grid, cols: Columns, thr: np.ndarray, safe: np.ndarray) -> np.ndarray:
    """(s, q, T) rows of each column whose row weight is at most the crossing of the
    thresholds ``thr`` (s, q) (one per tile), in :func:`_slot_dtype` (int64 without a cell
    table); meaningless where the slope is 0 (``safe``, the (q, T) slope with 1 there).

    The crossing is compared with the tile's row weights in the scaled cell domain of
    :func:`_local_lookup`, within float64 rounding of the unscaled comparison: where a grid
    row's value equals a threshold to that precision it may be counted either way, which is
    harmless since callers place thresholds a margin away from every bound that matters.
    """
    table = grid.rows.local_lookup
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        cross = thr[:, :, None] - cols.top
        cross /= safe
    np.clip(cross, -0.5, 1.5, out=cross)
    if table is None:
        cross += 4.0 * cols.ty[:, None]
        split = np.searchsorted(grid.rows.grid, cross, side="right")
        return split - (cols.ty * grid.rows.pos.shape[1])[:, None]
    cross += (4.0 * cols.ty + 1.0)[:, None]
    cross *= CELLS_PER_UNIT
    cell = cross.astype(np.int64)
    before, after, value = table
    return np.where(value[cell] <= cross, after[cell], before[cell])


def _rows_between(grid: Grid, cols: Columns, lo: np.ndarray, hi: np.ndarray,
                  sides: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Row slots [a, b) of each column with lo <= value <= hi (up to the ties above), for s
    pairs of thresholds at once: lo, hi (s, q); returns a, b (s, q, T) slot counts in
    :func:`_slot_dtype` (8-bit for tiles under 128 rows).

    Along a column the value is ``top + lam * step``: rising columns hold the rows with
    lam above lo's crossing and at most hi's, falling ones the reverse, flat ones all rows or
    none. ``sides``: (q,) bool per tile, whether its values may reach lo, and hi; a tile that
    may not has every row on the inner side of that bound, which is then not solved.
    """
    real = grid.rows.n_real[cols.ty][:, None]
    rising = cols.step > 0
    safe = np.where(cols.step == 0, 1.0, cols.step)
    skip = [np.asarray(np.isneginf(lo).all(axis=0)), np.asarray(np.isposinf(hi).all(axis=0))]
    if sides is not None:
        skip = [sk | ~may for sk, may in zip(skip, sides, strict=True)]
    s_lo = _side_splits(grid, cols, lo, safe, skip[0], rising, real)
    s_hi = _side_splits(grid, cols, hi, safe, skip[1], ~rising, real)
    a, b = np.where(rising, s_lo, s_hi), np.where(rising, s_hi, s_lo)
    flat = np.flatnonzero(cols.step == 0)
    if len(flat):
        tile, top = flat // cols.top.shape[1], cols.top.reshape(-1)[flat]
        a.reshape(len(a), -1)[:, flat] = 0
        b.reshape(len(b), -1)[:, flat] = np.where((lo[:, tile] <= top) & (top <= hi[:, tile]),
                                                  real[tile, 0], 0)
    return a, b


def _side_splits(grid: Grid, cols: Columns, thr: np.ndarray, safe: np.ndarray,
                 unreached: np.ndarray, low_side: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(s, q, T) :func:`_splits` of one bound; for the tiles ``unreached`` (every row on the
    inner side of the bound) the split that keeps every row: 0 where ``low_side`` (the rows
    inside start at the split), else every real row. Half the tiles or more are solved in
    place, fewer are gathered first."""
    if not unreached.any():
        return _splits(grid, cols, thr, safe)
    keep = np.broadcast_to(np.where(low_side, 0, real).astype(_slot_dtype(grid.rows)),
                           (len(thr), *cols.top.shape))
    if unreached.all():
        return keep
    idx = np.flatnonzero(~unreached)
    if 2 * len(idx) > len(unreached):
        return np.where(unreached[:, None], keep, _splits(grid, cols, thr, safe))
    out = keep.copy()
    out[:, idx] = _splits(grid, cols.take(idx), thr[:, idx], safe[idx])
    return out


def range_runs(grid: Grid, cols: Columns, lo: np.ndarray, hi: np.ndarray,
               inclusive: bool, sides: tuple[np.ndarray, np.ndarray] | None = None) -> Runs:
    """The decided in-range row runs of every real column, and the ambiguous tiles.

    A pixel is in the range when its value is beyond both bounds by more than the margin, out
    of it when beyond one bound the other way; anything else is ambiguous. Tiles whose corners
    are all 0 are exact (every value is 0) and decided by the bounds themselves. ``sides``
    (from :func:`bound_sides`) skips the bounds a tile cannot reach.
    """
    d = np.where(cols.exact, 0.0, cols.delta)
    a, b = _rows_between(grid, cols, np.stack([lo + d, lo - d]), np.stack([hi - d, hi + d]),
                         sides)
    n = np.maximum(b - a, 0)
    zero_in = ((lo <= 0) & (hi >= 0)) if inclusive else ((lo < 0) & (hi > 0))
    exact = np.flatnonzero(cols.exact)
    if len(exact):
        a[0, exact] = 0
        n[0, exact] = np.where(zero_in[exact], grid.rows.n_real[cols.ty[exact]], 0)[:, None]
    ok_col = grid.cols.ok[cols.tx]
    ambiguous = ((n[1] != n[0]) & ok_col).any(axis=1)
    ambiguous[exact] = False
    width = cols.top.shape[1]
    at = np.flatnonzero((n[0] > 0) & ok_col)
    start = a[0].reshape(-1)[at].astype(np.int64)
    return Runs(at // width, at % width, start, start + n[0].reshape(-1)[at], ambiguous)


def tile_extremes(grid: Grid, corners: np.ndarray, at: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, delta), each (p, ty, tx) float64: the least and greatest exact value over a
    tile's real pixels, and twice the margin; each (m,) for the m tiles ``at`` = (ty, tx)
    (m,) of ``corners`` (4, m).

    The exact value is bilinear in the row and column weights, so linear in each alone: over the
    rectangle of the tile's real weights its extremes lie at the four vertices, the pixels of
    the tile's first and last real row and column. torch's float32 values lie within the margin
    of the exact ones; twice the margin also covers this float64 evaluation.

    Args:
        corners: (4, p, ty, tx) float64 from :meth:`Grid.corners`.
    """
    a, b, c, d = corners
    where: Any = at if at is not None else ((slice(None), None), (None, slice(None)))
    ty, tx = where  # broadcast over (p, ty, tx), or gathered per tile
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite maps: decided elsewhere
        values = [_at(a, b, c, d, lam[ty], mu[tx])
                  for lam in _end_weights(grid.rows) for mu in _end_weights(grid.cols)]
    return (np.minimum.reduce(values), np.maximum.reduce(values),
            2.0 * grid.margin * np.abs(corners).max(axis=0))


def _end_weights(axis: AxisTiles) -> tuple[np.ndarray, np.ndarray]:
    """(t,) float64 weights of each tile's first and last real slot."""
    return axis.lam[:, 0], axis.lam[np.arange(len(axis.i0)), axis.n_real - 1]


def _at(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, lam: np.ndarray,
        mu: np.ndarray) -> np.ndarray:
    """Bilinear value at row weight ``lam`` and column weight ``mu`` (broadcast)."""
    top = a + mu * (b - a)
    return top + lam * (c + mu * (d - c) - top)


def full_tiles(extremes: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray,
               hi: np.ndarray) -> np.ndarray:
    """(p, ty, tx) bool: tiles whose every pixel is in (lo, hi) by torch's values, bounds (p,)
    per pair (strictly, so also in [lo, hi]); ``extremes`` from :func:`tile_extremes`.

    All-zero tiles (delta 0) are exact: every value is 0, in range when lo < 0 < hi.
    """
    low, high, delta = extremes
    return (low - delta > lo[:, None, None]) & (high + delta < hi[:, None, None])


def tight_candidates(extremes: tuple[np.ndarray, np.ndarray, np.ndarray], lo: np.ndarray,
                     hi: np.ndarray) -> np.ndarray:
    """(p, ty, tx) bool: tiles that may hold a pixel in [lo, hi] (bounds (p,) per pair): their
    exact extremes (``extremes`` from :func:`tile_extremes`) reach the range, up to torch's
    rounding, which twice the margin covers."""
    low, high, delta = extremes
    return (high >= lo[:, None, None] - delta) & (low <= hi[:, None, None] + delta)


def bound_sides(extremes: tuple[np.ndarray, np.ndarray, np.ndarray], cols: Columns,
                lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q,) bool per tile of ``cols``: its pixels may come within the margin of lo, of hi.

    A tile whose exact least value exceeds lo by twice the margin has every float64 pixel
    value above ``lo + margin`` (float64 rounding is far below the margin): all its rows are
    above lo both for the sure and the possible decision of :func:`range_runs`; same for hi.
    """
    low, high, delta = (e[cols.item, cols.ty, cols.tx] for e in extremes)
    return low - delta <= lo, high + delta >= hi
