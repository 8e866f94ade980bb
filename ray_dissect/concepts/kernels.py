"""Compiled per-pixel kernels (numba) for unit masks (the label-set groupings, also the
concept index's, are in :mod:`ray_dissect.concepts.set_kernels`).

The numpy code stays the reference: :func:`ray_dissect.concepts.masks.range_masks` walks
tiles with vectorised numpy, and the kernels here take the same decisions pixel by pixel in
compiled loops, so both give bit-identical signatures.

Which implementation runs is decided at each call (:func:`kernel_name`, :mod:`.jit`):
``numba`` when it imports, ``numpy`` otherwise, or when the environment variable
``RAY_DISSECT_KERNELS=numpy`` forces the reference (tests run both). Kernels are compiled on
first call with ``cache=True`` (numba's on-disk cache beside the module, or
``NUMBA_CACHE_DIR``), so the compilation is paid once per machine, and release the GIL.

The decision rule is :mod:`ray_dissect.concepts.tiles`' one: a pixel's value is evaluated in
float64 from its source cell's four corners; it is in a range when it is inside both bounds by
more than the cell's margin ``margin * max|corner|``, out when beyond one bound by more than
the margin, and otherwise ambiguous, which sends the (pair, range) through torch's full
upsampling (the caller does that). A cell whose corners are all 0 is exact (every value is
0), decided by the bounds themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect.concepts.column_kernels import (
    RUNS_MIN,
    column_split,
    count_run,
    fill_column,
    image_runs,
)
from ray_dissect.concepts.jit import HAVE_NUMBA, KERNEL_ENV, inline_jit, jit, kernel_name
from ray_dissect.concepts.set_kernels import SMALL_SETS, group_sets, unique_columns
from ray_dissect.concepts.tiles import AxisTiles, Grid

__all__ = ["HAVE_NUMBA", "KERNEL_ENV", "SMALL_SETS", "PairCounts", "count_ranges", "group_sets",
           "kernel_name", "unique_columns"]


SKIP, ALL, CHECK = 0, 1, 2
"""A cell's status for one range: no pixel in it, every pixel in it, decide pixel by pixel."""


@inline_jit
def _cell_status(amax: float, cmin: float, cmax: float, delta: float, lo: float, hi: float,
                 inc: bool) -> int:  # pragma: no cover - compiled
    """:data:`SKIP`, :data:`ALL` or :data:`CHECK` for a cell of corners of largest magnitude
    ``amax``, least ``cmin`` and greatest ``cmax`` (its values are convex combinations of
    them, within the margin ``delta`` in torch's float32)."""
    if amax == 0.0:  # every value is exactly 0
        inside = (lo <= 0.0 <= hi) if inc else (lo < 0.0 < hi)
        return ALL if inside else SKIP
    if cmax + delta < lo or cmin - delta > hi:
        return SKIP
    if cmin - delta > lo and cmax + delta < hi:
        return ALL
    return CHECK


@jit
def _finite(m: Any) -> bool:  # pragma: no cover - compiled
    """Whether every value of the (h, w) map is finite."""
    for y in range(m.shape[0]):
        for x in range(m.shape[1]):
            if not np.isfinite(m[y, x]):
                return False
    return True


@jit
def _count_all(cols: Any, tx: int, y0: int, n: int, runs: Any, hist: Any, todo: Any,
               n_todo: int) -> None:  # pragma: no cover - compiled
    """Add every pixel of a cell (column tile ``tx``, rows [y0, y0 + n)) to ``hist[r]``
    (m_sets,) for r in ``todo[:n_todo]``, column by column through the set runs."""
    local, colset, end, dims = runs
    c_pos = cols[2]
    for sx in range(cols[3][tx]):
        for j in range(n_todo):
            count_run(local, colset, end, dims, c_pos[tx, sx], y0, y0 + n, hist, todo[j])


@inline_jit
def _ties(a: float, b: float, c: float, d: float, rz: Any, ty: int, cz: bool, k0: int,
          k1: int, up: bool, n: int, r: int, zero_in: bool, local: Any, at: Any,
          hist: Any) -> bool:  # pragma: no cover - compiled
    """Decide slots [k0, k1) of a column (``at`` = (first row, column, sw) in
    ``local``, slot k is row k or n - 1 - k) within the margin of a bound: a pixel whose
    every corner of nonzero torch weight is 0 (``rz[ty]`` (T,) rows, ``cz`` the column: far
    weight exactly 0) is exactly 0, counted into ``hist[r]`` when 0 is in range
    (``zero_in``); returns False at the first other one (redo the range)."""
    for k in range(k0, k1):
        sy = k if up else n - 1 - k
        z = rz[ty, sy]
        if not (a == 0.0 and (cz or b == 0.0) and (z or c == 0.0) and (z or cz or d == 0.0)):
            return False
        if zero_in:
            hist[r, local[(at[0] + sy) * at[2] + at[1]]] += 1
    return True


@inline_jit
def _check_cell(corners: Any, rows: Any, cols: Any, ty: int, tx: int, todo: Any, n_todo: int,
                ranges: Any, delta: float, runs: Any, hist: Any, redo: Any,
                scratch: Any) -> None:  # pragma: no cover - compiled
    """Decide every pixel of cell (ty, tx) (corners a, b, c, d) for the ranges
    ``todo[:n_todo]``: in-range pixels into ``hist`` (R, m_sets), a pixel within ``delta``
    of a bound marks its range in ``redo`` (R,).

    Along a column the value is ``top + lam * step`` (the tile walk's formula), monotone in
    the row: a pixel is in when above ``lo + delta`` and below ``hi - delta``, out when below
    ``lo - delta`` or above ``hi + delta``, both solved as row intervals
    (:func:`column_split`). A pixel in between whose every corner of nonzero torch weight is
    0 (at a clamped edge: the far row or column has weight exactly 0) is exactly 0 in torch
    too and is decided by the bounds (``ranges``: lo, hi, inclusive). ``scratch``: values
    (T,) float64, bounds (4R,) float64."""
    a, b, c, d = corners
    lo, hi, inc = ranges
    c_pos, c_lam, c_zero, r_lam = cols[2], cols[4], cols[5], rows[4]
    local, colset, end, dims = runs
    vals, bound = scratch
    n, y_first = rows[3][ty], rows[2][ty, 0]
    for j in range(n_todo):
        r = todo[j]
        bound[4 * j], bound[4 * j + 1] = lo[r] + delta, hi[r] - delta  # surely in between
        bound[4 * j + 2], bound[4 * j + 3] = lo[r] - delta, hi[r] + delta  # maybe in
    for sx in range(cols[3][tx]):
        mu = c_lam[tx, sx]
        top = a + mu * (b - a)
        step = c + mu * (d - c) - top
        up, filled = step >= 0.0, False
        ends = (top + r_lam[ty, 0] * step, top + r_lam[ty, n - 1] * step)
        v_min, v_max = (ends[0], ends[1]) if up else (ends[1], ends[0])
        x = c_pos[tx, sx]
        at = (y_first, x, dims[0])
        for j in range(n_todo):
            r = todo[j]
            if redo[r] or v_max < bound[4 * j + 2] or v_min > bound[4 * j + 3]:
                continue
            if v_min > bound[4 * j] and v_max < bound[4 * j + 1]:
                count_run(local, colset, end, dims, x, y_first, y_first + n, hist, r)
                continue
            if not filled:
                filled = fill_column(top, step, r_lam, ty, n, vals) or True
            m0, i0, i1, m1 = column_split(vals, n, bound[4 * j], bound[4 * j + 1],
                                          bound[4 * j + 2], bound[4 * j + 3])
            if i1 <= i0:
                i0 = i1 = m1
            elif up:
                count_run(local, colset, end, dims, x, y_first + i0, y_first + i1, hist, r)
            else:
                count_run(local, colset, end, dims, x, y_first + n - i1, y_first + n - i0,
                          hist, r)
            zero_in = (lo[r] <= 0.0 <= hi[r]) if inc[r] else (lo[r] < 0.0 < hi[r])
            if (m0 < i0 or i1 < m1) and not (
                    _ties(a, b, c, d, rows[5], ty, c_zero[tx, sx], m0, i0, up, n, r, zero_in,
                          local, at, hist)
                    and _ties(a, b, c, d, rows[5], ty, c_zero[tx, sx], i1, m1, up, n, r,
                              zero_in, local, at, hist)):
                redo[r] = True


@jit
def _count_pair(m: Any, rows: Any, cols: Any, lo: Any, hi: Any, inc: Any, fires: Any,
                margin: float, runs: Any, hist: Any, redo: Any,
                scratch: Any) -> None:  # pragma: no cover - compiled
    """Count one (h, w) map's in-range pixels per range and local set into ``hist``;
    ``runs`` (local, colset, end, (sw, sh, use)) of the image (:func:`image_runs`),
    ``scratch`` (:func:`_check_cell`) work space."""
    n_ranges = lo.size
    if not _finite(m):
        redo[:] = fires
        return
    every, check = np.empty(n_ranges, np.int64), np.empty(n_ranges, np.int64)
    r_i0, r_i1, c_i0, c_i1 = rows[0], rows[1], cols[0], cols[1]
    for ty in range(r_i0.size):
        for tx in range(c_i0.size):
            a = np.float64(m[r_i0[ty], c_i0[tx]])
            b = np.float64(m[r_i0[ty], c_i1[tx]])
            c = np.float64(m[r_i1[ty], c_i0[tx]])
            d = np.float64(m[r_i1[ty], c_i1[tx]])
            n_every = n_check = 0
            amax = max(abs(a), abs(b), abs(c), abs(d))
            cmin, cmax, delta = min(a, b, c, d), max(a, b, c, d), margin * amax
            for r in range(n_ranges):
                if fires[r] and not redo[r]:
                    status = _cell_status(amax, cmin, cmax, delta, lo[r], hi[r], inc[r])
                    if status == ALL:
                        every[n_every] = r
                        n_every += 1
                    elif status == CHECK:
                        check[n_check] = r
                        n_check += 1
            if n_every:
                _count_all(cols, tx, rows[2][ty, 0], rows[3][ty], runs, hist, every, n_every)
            if n_check:
                _check_cell((a, b, c, d), rows, cols, ty, tx, check, n_check, (lo, hi, inc),
                            delta, runs, hist, redo, scratch)


@jit
def _count_pairs(acts: Any, img: Any, unit: Any, lo: Any, hi: Any, inc: Any, fires: Any,
                 rows: Any, cols: Any, margin: float, local: Any, indptr: Any, sw: int,
                 offsets: Any, weight: Any) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """Counts of every (pair, range, image-local set), flat at ``offsets[p] + r * m + s``
    (m the image's number of sets), and the (p, R) ranges to redo with torch."""
    n_pairs, n_ranges = lo.shape
    counts = np.zeros(offsets[n_pairs], np.int64)
    redo = np.zeros((n_pairs, n_ranges), np.bool_)
    sh = local.shape[1] // sw
    colset, end = np.empty(local.shape[1], np.int32), np.empty(local.shape[1], np.int32)
    scratch = (np.empty(rows[4].shape[1]), np.empty(4 * n_ranges))
    last = -1
    for p in range(n_pairs):
        i = img[p]
        use = weight[i] >= RUNS_MIN
        if use and i != last:  # pairs come image by image: built once per image
            image_runs(local[i], sw, colset, end)
            last = i
        m_sets = indptr[i + 1] - indptr[i]
        hist = counts[offsets[p]:offsets[p + 1]].reshape((n_ranges, m_sets))
        _count_pair(acts[i, unit[p]], rows, cols, lo[p], hi[p], inc, fires[p], margin,
                    (local[i], colset, end, (sw, sh, use)), hist, redo[p], scratch)
    return counts, redo


@jit
def _recount(up: Any, at: Any, r: int, lo: Any, hi: Any, inc: bool, img: Any, local: Any,
             indptr: Any, offsets: Any, counts: Any) -> None:  # pragma: no cover - compiled
    """Replace range ``r``'s counts of pairs ``at`` (q,) by those of their dense float32
    maps ``up`` (q, sh * sw), bounds ``lo``, ``hi`` (q,) float64."""
    for j in range(at.size):
        p = at[j]
        i = img[p]
        m_sets = indptr[i + 1] - indptr[i]
        n_ranges = (offsets[p + 1] - offsets[p]) // m_sets
        hist = counts[offsets[p]:offsets[p + 1]].reshape((n_ranges, m_sets))[r]
        hist[:] = 0
        for q in range(up.shape[1]):
            v = np.float64(up[j, q])
            if (lo[j] <= v <= hi[j]) if inc else (lo[j] < v < hi[j]):
                hist[local[i, q]] += 1


@dataclass(frozen=True)
class PairCounts:
    """Pixel counts of a block's (pair, range, label set), from :func:`count_ranges`.

    Attributes:
        counts: (e,) int64, pair p's range r and image-local set s at
            ``offsets[p] + r * n_sets[p] + s``; offsets: (p + 1,) int64; n_sets: (p,) int64
            label sets of the pair's image.
        redo: (p, R) bool, (pair, range)s the kernel could not decide (recount them with
            :meth:`recount` from torch's maps).
        groups: :func:`group_sets` of the block.
    """

    counts: np.ndarray
    offsets: np.ndarray
    n_sets: np.ndarray
    redo: np.ndarray
    groups: tuple[np.ndarray, np.ndarray, np.ndarray]

    def recount(self, images: np.ndarray, r: int, at: np.ndarray, up: np.ndarray,
                bounds: tuple[np.ndarray, np.ndarray, bool]) -> None:
        """Count range ``r`` of pairs ``at`` (q,) from their dense maps ``up`` (q, sh, sw)
        float32, bounds (q,) float64 each, exactly as ``lo < up < hi`` (or ``<=``)."""
        if len(at):
            local, indptr, _ = self.groups
            _recount(up.reshape(len(at), -1), at, r, bounds[0].astype(np.float64),
                     bounds[1].astype(np.float64), bounds[2], images, local, indptr,
                     self.offsets, self.counts)

    def entries(self, images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per range, (pair, global set, count) (m,) int64 of the nonzero counts."""
        _, indptr, sets = self.groups
        at = np.flatnonzero(self.counts)
        pair = np.searchsorted(self.offsets, at, side="right") - 1
        r, s = np.divmod(at - self.offsets[pair], self.n_sets[pair])
        glob = sets[indptr[images[pair]] + s]
        return [(pair[sel], glob[sel], self.counts[at[sel]])
                for sel in (r == j for j in range(self.redo.shape[1]))]


def count_ranges(acts: np.ndarray, images: np.ndarray, units: np.ndarray,
                 bounds: list[tuple[np.ndarray, np.ndarray, bool]], fires: list[np.ndarray],
                 grid: Grid, set_ids: np.ndarray) -> PairCounts:
    """Pixel counts per (pair, label set) of every range, in compiled code: per tile column,
    the rows in range solved and counted through the image's runs of equal label sets
    (:mod:`ray_dissect.concepts.column_kernels`).

    Args:
        acts: (n, k, h, w) float32 maps of a block; images, units: (p,) int64 the pairs.
        bounds: per range (lo, hi, inclusive), lo and hi (n, k) float64.
        fires: per range (p,) bool, the pair's peak reaches the range (else no count).
        grid: the tiles of the (h, w) -> (sh, sw) upsampling; set_ids: (n, sh, sw) int64.
    """
    groups = group_sets(set_ids)
    n_sets = np.diff(groups[1])[images]
    offsets = np.concatenate([[0], np.cumsum(n_sets * len(bounds))]).astype(np.int64)
    lo = np.stack([b[0][images, units] for b in bounds], axis=1).astype(np.float64)
    hi = np.stack([b[1][images, units] for b in bounds], axis=1).astype(np.float64)
    fired = np.stack(fires, axis=1)
    weight = np.bincount(images, fired.sum(axis=1), minlength=len(acts)).astype(np.int64)
    counts, redo = _count_pairs(
        np.ascontiguousarray(acts), images, units, lo, hi,
        np.array([b[2] for b in bounds], dtype=np.bool_), fired,
        _axis(grid.rows), _axis(grid.cols), grid.margin, groups[0], groups[1], grid.shape[1],
        offsets, weight)
    return PairCounts(counts, offsets, n_sets, redo, groups)


def _axis(axis: AxisTiles) -> tuple[np.ndarray, ...]:
    """An axis's tiles as the kernels read them: (i0, i1, pos, n_real, lam, zero), zero (t, T)
    bool where the i1 weight is exactly 0 in torch too: the source coordinate is clamped at
    the first edge (below 0 by far more than float32 rounding)."""
    n_in, n_out = int(axis.i1.max(initial=0)) + 1, int(axis.pos.max(initial=0)) + 1
    clamped = n_in / n_out * (axis.pos + 0.5) - 0.5 < -1e-6
    return (axis.i0.astype(np.int64), axis.i1.astype(np.int64), axis.pos.astype(np.int64),
            axis.n_real.astype(np.int64), axis.lam.astype(np.float64), clamped & axis.ok)
