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

from ray_dissect.concepts.jit import HAVE_NUMBA, KERNEL_ENV, jit, kernel_name
from ray_dissect.concepts.set_kernels import SMALL_SETS, group_sets, unique_columns
from ray_dissect.concepts.tiles import AxisTiles, Grid

__all__ = ["HAVE_NUMBA", "KERNEL_ENV", "SMALL_SETS", "PairCounts", "count_ranges", "group_sets",
           "kernel_name", "unique_columns"]


SKIP, ALL, CHECK = 0, 1, 2
"""A cell's status for one range: no pixel in it, every pixel in it, decide pixel by pixel."""


@jit
def _cell_status(a: float, b: float, c: float, d: float, lo: float, hi: float, inc: bool,
                 margin: float) -> int:  # pragma: no cover - compiled
    """:data:`SKIP`, :data:`ALL` or :data:`CHECK` for a cell of corners a, b, c, d (its
    values are convex combinations of them, within the margin in torch's float32)."""
    amax = max(abs(a), abs(b), abs(c), abs(d))
    if amax == 0.0:  # every value is exactly 0
        inside = (lo <= 0.0 <= hi) if inc else (lo < 0.0 < hi)
        return ALL if inside else SKIP
    delta = margin * amax
    cmin, cmax = min(a, b, c, d), max(a, b, c, d)
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
def _count_all(rows: Any, cols: Any, ty: int, tx: int, local: Any, sw: int, hist: Any,
               todo: Any, n_todo: int, tmp: Any) -> None:  # pragma: no cover - compiled
    """Add every pixel of cell (ty, tx) to ``hist[r]`` (m_sets,) for r in ``todo[:n_todo]``,
    through ``tmp`` (m_sets,) int64 when there are several."""
    r_pos, r_n, c_pos, c_n = rows[2], rows[3], cols[2], cols[3]
    out = hist[todo[0]] if n_todo == 1 else tmp
    if n_todo > 1:
        tmp[:] = 0
    for sy in range(r_n[ty]):
        row = r_pos[ty, sy] * sw
        for sx in range(c_n[tx]):
            out[local[row + c_pos[tx, sx]]] += 1
    if n_todo > 1:
        for j in range(n_todo):
            hist[todo[j]] += tmp


@jit
def _check_cell(corners: Any, rows: Any, cols: Any, ty: int, tx: int, todo: Any, n_todo: int,
                ranges: Any, delta: float, local: Any, sw: int, hist: Any, redo: Any,
                scratch: Any) -> None:  # pragma: no cover - compiled
    """Decide every pixel of cell (ty, tx) (corners a, b, c, d) for the ranges
    ``todo[:n_todo]``: in-range pixels into ``hist`` (R, m_sets), a pixel within ``delta``
    of a bound marks its range in ``redo`` (R,).

    Along a column the value is ``top + lam * step`` (the tile walk's formula); a pixel is in
    when above ``lo + delta`` and below ``hi - delta``, out when below ``lo - delta`` or above
    ``hi + delta``. A pixel in between whose every corner of nonzero torch weight is 0 (at a
    clamped edge: the far row or column has weight exactly 0) is exactly 0 in torch too and
    is decided by the bounds (``ranges``: lo, hi, inclusive). ``scratch``: (2T + 4R,)
    float64 work space."""
    a, b, c, d = corners
    lo, hi, inc = ranges
    r_pos, r_n, r_lam, r_zero = rows[2], rows[3], rows[4], rows[5]
    c_pos, c_n, c_lam, c_zero = cols[2], cols[3], cols[4], cols[5]
    width = c_n[tx]
    size = c_lam.shape[1]
    top, step, bound = scratch[:size], scratch[size:2 * size], scratch[2 * size:]
    for sx in range(width):
        mu = c_lam[tx, sx]
        top[sx] = a + mu * (b - a)
        step[sx] = c + mu * (d - c) - top[sx]
    for j in range(n_todo):
        r = todo[j]
        bound[4 * j], bound[4 * j + 1] = lo[r] + delta, hi[r] - delta  # surely in between
        bound[4 * j + 2], bound[4 * j + 3] = lo[r] - delta, hi[r] + delta  # maybe in
    for sy in range(r_n[ty]):
        row = r_pos[ty, sy] * sw
        lam = r_lam[ty, sy]
        for sx in range(width):
            v = top[sx] + lam * step[sx]
            s = local[row + c_pos[tx, sx]]
            for j in range(n_todo):
                if bound[4 * j] < v < bound[4 * j + 1]:
                    hist[todo[j], s] += 1
                elif bound[4 * j + 2] <= v <= bound[4 * j + 3]:
                    r = todo[j]
                    rz, cz = r_zero[ty, sy], c_zero[tx, sx]
                    if not (a == 0.0 and (cz or b == 0.0) and (rz or c == 0.0)
                            and (rz or cz or d == 0.0)):
                        redo[r] = True
                    elif (lo[r] <= 0.0 <= hi[r]) if inc[r] else (lo[r] < 0.0 < hi[r]):
                        hist[r, s] += 1


@jit
def _count_pair(m: Any, rows: Any, cols: Any, lo: Any, hi: Any, inc: Any, fires: Any,
                margin: float, local: Any, sw: int, hist: Any, redo: Any, tmp: Any,
                scratch: Any) -> None:  # pragma: no cover - compiled
    """Count one (h, w) map's in-range pixels per range and local set into ``hist``;
    ``tmp`` (m_sets,) int64 and ``scratch`` (:func:`_check_cell`) are work space."""
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
            for r in range(n_ranges):
                if fires[r] and not redo[r]:
                    status = _cell_status(a, b, c, d, lo[r], hi[r], inc[r], margin)
                    if status == ALL:
                        every[n_every] = r
                        n_every += 1
                    elif status == CHECK:
                        check[n_check] = r
                        n_check += 1
            if n_every:
                _count_all(rows, cols, ty, tx, local, sw, hist, every, n_every, tmp)
            if n_check:
                delta = margin * max(abs(a), abs(b), abs(c), abs(d))
                _check_cell((a, b, c, d), rows, cols, ty, tx, check, n_check, (lo, hi, inc),
                            delta, local, sw, hist, redo, scratch)


@jit
def _count_pairs(acts: Any, img: Any, unit: Any, lo: Any, hi: Any, inc: Any, fires: Any,
                 rows: Any, cols: Any, margin: float, local: Any, indptr: Any, sw: int,
                 offsets: Any) -> tuple[Any, Any]:  # pragma: no cover - compiled
    """Counts of every (pair, range, image-local set), flat at ``offsets[p] + r * m + s``
    (m the image's number of sets), and the (p, R) ranges to redo with torch."""
    n_pairs, n_ranges = lo.shape
    counts = np.zeros(offsets[n_pairs], np.int64)
    redo = np.zeros((n_pairs, n_ranges), np.bool_)
    widest = 0
    for i in range(indptr.size - 1):
        widest = max(widest, indptr[i + 1] - indptr[i])
    tmp = np.zeros(widest, np.int64)
    scratch = np.empty(2 * cols[4].shape[1] + 4 * n_ranges)
    for p in range(n_pairs):
        i = img[p]
        m_sets = indptr[i + 1] - indptr[i]
        hist = counts[offsets[p]:offsets[p + 1]].reshape((n_ranges, m_sets))
        _count_pair(acts[i, unit[p]], rows, cols, lo[p], hi[p], inc, fires[p], margin,
                    local[i], sw, hist, redo[p], tmp[:m_sets], scratch)
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
    """Pixel counts per (pair, label set) of every range, pixel by pixel in compiled code.

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
    counts, redo = _count_pairs(
        np.ascontiguousarray(acts), images, units, lo, hi,
        np.array([b[2] for b in bounds], dtype=np.bool_), np.stack(fires, axis=1),
        _axis(grid.rows), _axis(grid.cols), grid.margin, groups[0], groups[1], grid.shape[1],
        offsets)
    return PairCounts(counts, offsets, n_sets, redo, groups)


def _axis(axis: AxisTiles) -> tuple[np.ndarray, ...]:
    """An axis's tiles as the kernels read them: (i0, i1, pos, n_real, lam, zero), zero (t, T)
    bool where the i1 weight is exactly 0 in torch too: the source coordinate is clamped at
    the first edge (below 0 by far more than float32 rounding)."""
    n_in, n_out = int(axis.i1.max(initial=0)) + 1, int(axis.pos.max(initial=0)) + 1
    clamped = n_in / n_out * (axis.pos + 0.5) - 0.5 < -1e-6
    return (axis.i0.astype(np.int64), axis.i1.astype(np.int64), axis.pos.astype(np.int64),
            axis.n_real.astype(np.int64), axis.lam.astype(np.float64), clamped & axis.ok)
