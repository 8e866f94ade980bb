"""Compiled column runs: a tile column's in-range rows solved, not tested pixel by pixel.

Along one column of a tile the upsampled value is ``top + lam * step`` (float64, the tile
walk's formula) with the row weights ``lam`` ascending, so it is monotone in the row (float
multiplication and addition round monotonically): the rows inside a range, and those within
the margin of a bound, are intervals of the tile's rows, found by counting the column's
values below each bound that crosses it. An interval is counted per label set through the
image's column-major runs of equal sets (:func:`image_runs`), a few additions per column
instead of one per pixel.
The decisions are those of :mod:`ray_dissect.concepts.kernels`' pixel rule, pixel for pixel.
"""

from __future__ import annotations

from typing import Any

from ray_dissect.concepts.jit import inline_jit, jit

RUNS_MIN = 32
"""An image's runs are built when its pairs have at least this many ranges to count (the
build reads every pixel once; below, pixels are counted one by one)."""


@jit
def image_runs(local: Any, sw: int, colset: Any, end: Any) -> None:  # pragma: no cover
    """One image's ``local`` (sh * sw,) row-major set ids into ``colset`` (sw * sh,) int32
    column-major, and ``end`` (sw * sh,) int32 column-major the row where each pixel's run
    of equal sets in its column ends."""
    sh = local.size // sw
    for x in range(sw):
        base = x * sh
        stop, prev = sh, -1
        for y in range(sh - 1, -1, -1):
            s = local[y * sw + x]
            if s != prev:
                stop, prev = y + 1, s
            colset[base + y] = s
            end[base + y] = stop


@inline_jit
def count_run(local: Any, colset: Any, end: Any, dims: Any, x: int, y0: int, y1: int,
              hist: Any, r: int) -> None:  # pragma: no cover - compiled
    """Add rows [y0, y1) of column ``x`` to ``hist[r]`` (R, m_sets) per set, from an
    image's ``colset`` and ``end`` (:func:`image_runs`) when ``use``, else pixel by pixel
    from ``local`` (sh * sw,); ``dims`` = (sw, sh, use). Indices, not views: a view costs
    reference counting in this inner loop."""
    sw, sh, use = dims
    if not use:
        for y in range(y0, y1):
            hist[r, local[y * sw + x]] += 1
        return
    base = x * sh
    y = y0
    while y < y1:
        e = min(end[base + y], y1)
        hist[r, colset[base + y]] += e - y
        y = e


@inline_jit
def fill_column(top: float, step: float, lam: Any, ty: int, n: int,
                vals: Any) -> bool:  # pragma: no cover - compiled
    """``vals[:n]`` the column's values ascending (row weights ``lam[ty]`` (T,)): rows in
    order when ``step >= 0`` (returned True), reversed otherwise (slot j is row n - 1 - j)."""
    if step >= 0.0:
        for j in range(n):
            vals[j] = top + lam[ty, j] * step
        return True
    for j in range(n):
        vals[j] = top + lam[ty, n - 1 - j] * step
    return False


@inline_jit
def _n_below(vals: Any, n: int, bound: float, strict: bool) -> int:  # pragma: no cover
    """How many of ``vals[:n]`` are ``< bound`` (``strict``) or ``<= bound``."""
    k = 0
    if strict:
        for j in range(n):
            k += vals[j] < bound
    else:
        for j in range(n):
            k += vals[j] <= bound
    return k


@inline_jit
def column_split(vals: Any, n: int, surely_lo: float, surely_hi: float, maybe_lo: float,
                 maybe_hi: float) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """Slots of ascending ``vals[:n]`` for one range (bounds lo + delta, hi - delta,
    lo - delta, hi + delta): (m0, i0, i1, m1), surely in ``[i0, i1)`` (empty when
    i1 <= i0), maybe in ``[m0, m1)``. A bound beyond the column is not counted, nor a
    maybe-bound whose margin holds no value."""
    i0 = 0 if vals[0] > surely_lo else _n_below(vals, n, surely_lo, False)
    i1 = n if vals[n - 1] < surely_hi else _n_below(vals, n, surely_hi, True)
    m0, m1 = i0, i1
    if i1 <= i0 or (i0 > 0 and vals[i0 - 1] >= maybe_lo):
        m0 = _n_below(vals, n, maybe_lo, True)
    if i1 <= i0 or (i1 < n and vals[i1] <= maybe_hi):
        m1 = _n_below(vals, n, maybe_hi, False)
    return m0, i0, i1, m1
