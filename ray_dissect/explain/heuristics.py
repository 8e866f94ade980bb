"""Admissible upper bounds of a candidate's IoU, to prune the beam search (CCE heuristics).

Clustered Compositional Explanations (La Rosa et al., NeurIPS 2023) bound the IoU of every
candidate ``F op t`` (F a beam formula, t an atom, op in OR / AND / AND NOT) from per-image
statistics, and only evaluate exactly the candidates whose bound can still enter the beam. A
bound is *admissible* when it is >= the true IoU; with admissible bounds pruning never changes
the beam. All three kinds here are admissible (proofs below; tested against dense masks).

Notation, per image x (S pixels): B the unit mask, A_x = |B|, H = sum_x A_x; for a mask P:
a_P = |P|, I_P = |B and P|, o_P = a_P - I_P = |P \\ B|, box BB_P and largest all-ones
rectangle R_P; ov(.,.) the area of a rectangle intersection; |BB| a rectangle's area. The
candidate M = L op R has i = |B and M| and d = |M \\ B|, and IoU = sum i / (H + sum d). Every
kind computes per image Imax >= i and 0 <= Dmin <= d, and returns
``sum Imax / (H + sum Dmin)`` (0 when H = 0): the numerator can only grow and the (positive,
>= H) denominator only shrink, so the result is >= the true IoU. Imax <= A_x, so it is <= 1.

**mmesh / cfh.** Everything follows from bounds on the two parts of L and R, inside and
outside the unit: p = |B and L and R| and q = |(L and R) \\ B|, with p + q = |L and R|.

- up >= |L and R|: min(a_L, a_R, ov(BB_L, BB_R)) (L and R lies in both boxes).
- lo <= |L and R|: max(ov(R_L, R_R), a_L + a_R - min(S, |BB_L| + |BB_R| - ov(BB_L, BB_R)))
  (both rectangles lie in L and R; |L or R| <= |BB_L or BB_R| <= S).
- p0 = max(0, I_L + I_R - A_x) <= p and q0 = max(0, o_L + o_R - (S - A_x)) <= q
  (inclusion-exclusion inside and outside B).
- p <= p_hi = min(I_L, I_R, up - q0); q <= q_hi = min(o_L, o_R, up - p0);
  p >= p_lo = max(p0, lo - q_hi); q >= q_lo = max(q0, lo - p_hi).

Then, exactly: OR i = I_L + I_R - p, d = o_L + o_R - q; AND i = p, d = q; AND NOT t
(with R = t) i = I_L - p, d = o_L - q. Imax and Dmin take whichever bound of p and q makes
i largest and d smallest (p_lo for OR and AND NOT, p_hi for AND; likewise for q).
``cfh`` (coordinate-free) is the same with up = min(a_L, a_R), lo = a_L + a_R - S.

Published terms, checked: OR Imax = min(A_x, I_L + I_R) is I_L + I_R - p0; AND Imax =
min(I_L, I_R) and AND NOT Imax = min(I_L, A_x - I_t) = I_L - p0 are valid; amin
(OR max(a_L, a_R, a_L + a_R - ov(BB)), AND ov(R_L, R_R), AND NOT a_L - ov(BB_L, BB_t)) are
valid lower bounds of |M| (|L and R| <= ov(BB_L, BB_R) since it lies in both boxes), and
max(amin, Imax) - Imax <= d (amin - Imax <= |M| - i). Every published term is thus kept
(none was invalid), inside p/q bounds that are never looser: our Dmin is >= the published
max(amin, Imax) - Imax and our Imax <= the published Imax (AND also gets ov(BB_L, BB_R), so
disjoint boxes give 0; o_L and o_t bound the part outside the unit).
The published CFH ``sum Imax / (H - sum Imax)`` is not a bound of a ratio (it can exceed 1 or
divide by zero); it is replaced as above. The scene shortcut needs no special case: when
a_R (or a_L) is 0 or S in an image, p_lo = p_hi and q_lo = q_hi there, so mmesh and cfh are
exact for whole-image labels (tested).

**areas** uses areas only (a_L, a_t, A_x, S; not I_L, I_t, boxes): Imax = min(A_x, a_L + a_t)
(OR), min(A_x, a_L, a_t) (AND), min(A_x, a_L, S - a_t) (AND NOT), each >= |M| or >= |B| hence
>= i; with alo <= |M| = max(a_L, a_t), a_L + a_t - S, a_L - a_t, Dmin = max(0, alo - Imax)
<= |M| - i = d.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

HEURISTICS = ("mmesh", "cfh", "areas")
_EMPTY = (0, 0, -1, -1)
_CHUNK = 1 << 22  # elements of one (atoms, images) block in :func:`estimates`

_Bounds = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SampleStats:
    """Per-image statistics of one or several masks.

    Attributes:
        area: (..., N) int64 pixels of the mask in each image.
        inter: (..., N) int64 pixels also in the unit mask.
        box: (..., N, 4) int32 bounding box (r0, c0, r1, c1), inclusive; empty (0, 0, -1, -1).
        inscribed: (..., N, 4) int32 a largest all-ones rectangle, same layout and empty value.
    """

    area: np.ndarray
    inter: np.ndarray
    box: np.ndarray
    inscribed: np.ndarray


def _take(stats: SampleStats, rows: slice) -> SampleStats:
    """The stats of ``rows`` of the leading (mask) axis."""
    return SampleStats(stats.area[rows], stats.inter[rows], stats.box[rows],
                       stats.inscribed[rows])


def bounding_boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding box of every mask.

    Args:
        masks: (..., h, w) bool.

    Returns:
        (..., 4) int32 (r0, c0, r1, c1) inclusive; (0, 0, -1, -1) for an empty mask.
    """
    masks = np.asarray(masks, dtype=bool)
    h, w = masks.shape[-2:]
    rows, cols = np.asarray(masks.any(axis=-1)), np.asarray(masks.any(axis=-2))
    box = np.stack([rows.argmax(-1), cols.argmax(-1), h - 1 - rows[..., ::-1].argmax(-1),
                    w - 1 - cols[..., ::-1].argmax(-1)], axis=-1).astype(np.int32)
    box[~rows.any(axis=-1)] = _EMPTY
    return box


def _scan(x: np.ndarray, op: np.ufunc, reverse: bool) -> np.ndarray:
    """Prefix (``reverse``: suffix) ``op``-accumulation along axis 0 by doubling steps.

    Args:
        x: (w, n) int array (consumed).
        op: np.maximum or np.minimum.
        reverse: scan from the last row towards the first.

    Returns:
        (w, n) array, row j = op over rows 0..j (or j..w-1).
    """
    w, buf, s = x.shape[0], x.copy(), 1
    while s < w:
        if reverse:
            op(x[:-s], x[s:], out=buf[:-s])
            buf[w - s:] = x[w - s:]
        else:
            op(x[s:], x[:-s], out=buf[s:])
            buf[:s] = x[:s]
        x, buf, s = buf, x, 2 * s
    return x


def largest_inscribed(masks: np.ndarray) -> np.ndarray:
    """A largest axis-aligned all-ones rectangle of every mask (maximal-rectangle DP).

    Row by row, vectorised over masks (laid out (w, n)): ``height`` is the run of ones ending
    at the row in each column, ``left``/``right`` (right exclusive, stored minus w) the widest
    extent of that column's ``height``-tall rectangle, from the runs of ones of the row; the
    best ``height * (right - left)`` over all cells is a largest rectangle. Ties keep the first
    row, then the first column. About 0.3 s for 2,000 masks of 112 x 112.

    Args:
        masks: (..., h, w) bool.

    Returns:
        (..., 4) int32 (r0, c0, r1, c1) inclusive; (0, 0, -1, -1) for an empty mask.
    """
    masks = np.asarray(masks, dtype=bool)
    *lead, h, w = masks.shape
    grid = np.ascontiguousarray(masks.reshape(-1, h, w).transpose(1, 2, 0))  # (h, w, n)
    n = grid.shape[2]
    dt = np.int16 if h * w < 2**15 else np.int32
    start = np.arange(1, w + 1, dtype=dt)[:, None]  # a zero at column j starts runs at j + 1
    stop = (np.arange(w, dtype=dt) - w)[:, None]  # ... and ends runs before j (minus w)
    height, left, right = (np.zeros((w, n), dt) for _ in range(3))
    best_area = np.zeros(n, dt)
    best = np.tile(np.array(_EMPTY, np.int32), (n, 1))
    for r in range(h):
        row = grid[r]
        off = ~row
        height = (height + dt(1)) * row
        left = np.maximum(left, _scan(start * off, np.maximum, False)) * row
        right = np.minimum(right, _scan(stop * off, np.minimum, True)) * row
        area = height * (right + dt(w) - left)
        top = area.max(axis=0)
        better = np.flatnonzero(top > best_area)
        if better.size:
            j = area[:, better].argmax(axis=0)
            best_area[better] = top[better]
            best[better] = np.stack([r + 1 - height[j, better], left[j, better],
                                     np.full(better.size, r), right[j, better] + w - 1], axis=1)
    return best.reshape(*lead, 4)


def sample_stats(masks: np.ndarray, unit: np.ndarray) -> SampleStats:
    """Per-image area, intersection with the unit, bounding box and inscribed rectangle.

    Args:
        masks: (N, h, w) bool (one mask over N images) or (A, N, h, w) bool (A masks).
        unit: (N, h, w) bool unit mask.

    Returns:
        :class:`SampleStats` with arrays (N,)/(N, 4) or (A, N)/(A, N, 4).

    Raises:
        ValueError: shapes that do not match.
    """
    masks, unit = np.asarray(masks, dtype=bool), np.asarray(unit, dtype=bool)
    if masks.ndim not in (3, 4) or unit.ndim != 3 or masks.shape[-3:] != unit.shape:
        raise ValueError(f"masks {masks.shape} and unit {unit.shape} do not match; expected "
                         "(N, h, w) or (A, N, h, w) masks and an (N, h, w) unit")
    area = np.count_nonzero(masks, axis=(-2, -1)).astype(np.int64)
    inter = np.count_nonzero(masks & unit, axis=(-2, -1)).astype(np.int64)
    return SampleStats(area, inter, bounding_boxes(masks), largest_inscribed(masks))


def _rect_area(r: np.ndarray) -> np.ndarray:
    """(..., 4) inclusive rectangles -> (...) int areas (0 for empty ones)."""
    return (np.maximum(r[..., 2] - r[..., 0] + 1, 0)
            * np.maximum(r[..., 3] - r[..., 1] + 1, 0))


def _overlap(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(..., 4) and broadcastable (..., 4) inclusive rectangles -> (...) intersection areas."""
    rows = np.minimum(r[..., 2], s[..., 2]) - np.maximum(r[..., 0], s[..., 0]) + 1
    cols = np.minimum(r[..., 3], s[..., 3]) - np.maximum(r[..., 1], s[..., 1]) + 1
    return np.maximum(rows, 0) * np.maximum(cols, 0)


def _combine(left: SampleStats, atoms: SampleStats, unit_area: np.ndarray, size: int,
             up: np.ndarray, lo: np.ndarray) -> _Bounds:
    """(Imax, Dmin) of OR, AND, AND NOT from bounds up >= |L and t| >= lo (module docstring).

    Args:
        left: stats of F, arrays (N,); atoms: stats of a atoms, arrays (a, N).
        unit_area: (N,) int64 A_x; size: S.
        up, lo: (a, N) int bounds of |F and t| per image.

    Returns:
        Three (Imax, Dmin) pairs of (a, N) int64 arrays, ops or, and, and_not.
    """
    il, it = left.inter, atoms.inter
    ol, ot = left.area - il, atoms.area - it
    p0 = np.maximum(0, il + it - unit_area)
    q0 = np.maximum(0, ol + ot - (size - unit_area))
    p_hi = np.minimum(np.minimum(il, it), up - q0)
    q_hi = np.minimum(np.minimum(ol, ot), up - p0)
    p_lo = np.maximum(p0, lo - q_hi)
    q_lo = np.maximum(q0, lo - p_hi)
    return [(il + it - p_lo, ol + ot - q_hi), (p_hi, q_lo), (il - p_lo, ol - q_hi)]


def _mmesh(left: SampleStats, atoms: SampleStats, unit_area: np.ndarray,
           size: int) -> _Bounds:
    """MMESH: areas, intersections, boxes and inscribed rectangles (see :func:`_combine`)."""
    ov_box = _overlap(left.box, atoms.box)
    hull = np.minimum(size, _rect_area(left.box) + _rect_area(atoms.box) - ov_box)
    up = np.minimum(np.minimum(left.area, atoms.area), ov_box)
    lo = np.maximum(_overlap(left.inscribed, atoms.inscribed), left.area + atoms.area - hull)
    return _combine(left, atoms, unit_area, size, up, lo)


def _cfh(left: SampleStats, atoms: SampleStats, unit_area: np.ndarray, size: int) -> _Bounds:
    """Coordinate-free: areas and intersections only (see :func:`_combine`)."""
    up = np.minimum(left.area, atoms.area)
    return _combine(left, atoms, unit_area, size, up, left.area + atoms.area - size)


def _areas(left: SampleStats, atoms: SampleStats, unit_area: np.ndarray,
           size: int) -> _Bounds:
    """Areas only (a_F, a_t, A_x, S); (Imax, Dmin) pairs of (a, N) int64 arrays."""
    al, at = left.area, atoms.area
    pairs = [(np.minimum(unit_area, al + at), np.maximum(al, at)),
             (np.minimum(unit_area, np.minimum(al, at)), al + at - size),
             (np.minimum(unit_area, np.minimum(al, size - at)), al - at)]
    return [(imax, np.maximum(0, alo - imax)) for imax, alo in pairs]


_KINDS: dict[str, Callable[[SampleStats, SampleStats, np.ndarray, int], _Bounds]] = {
    "mmesh": _mmesh, "cfh": _cfh, "areas": _areas}


def estimates(kind: str, left: SampleStats, atoms: SampleStats, unit_area: np.ndarray,
              size: int) -> np.ndarray:
    """Admissible upper bounds of the IoU of F OR t, F AND t, F AND NOT t for every atom t.

    Args:
        kind: one of :data:`HEURISTICS`.
        left: stats of one beam formula F, arrays (N,) and (N, 4).
        atoms: stats of A atoms, arrays (A, N) and (A, N, 4).
        unit_area: (N,) int64 unit pixels per image (A_x).
        size: pixels per mask S (h * w).

    Returns:
        (3, A) float64 in [0, 1], rows or, and, and_not; each >= the true IoU (all 0 when the
        unit is empty). Work is done in blocks of about 4M (atom, image) pairs.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown heuristic {kind!r}; expected one of {', '.join(HEURISTICS)}")
    unit_area = np.asarray(unit_area, dtype=np.int64)
    n_atoms = atoms.area.shape[0]
    out = np.zeros((3, n_atoms))
    total = int(unit_area.sum())
    if total == 0:
        return out
    step = max(1, _CHUNK // max(1, unit_area.shape[0]))
    for start in range(0, n_atoms, step):
        part = _take(atoms, slice(start, start + step))
        for op, (imax, dmin) in enumerate(_KINDS[kind](left, part, unit_area, size)):
            out[op, start:start + step] = imax.sum(axis=-1) / (total + dmin.sum(axis=-1))
    return out
