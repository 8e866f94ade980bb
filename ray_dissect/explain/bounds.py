"""Admissible upper bounds of the IoU reachable from a partial formula, in label-set space.

Notation (one unit mask B): every label set s has ``c_s`` pixels, ``h_s`` of them in B and
``m_s = c_s - h_s`` outside; ``H = |B|``. A formula selects a set of label sets T, with hits
``I(T) = sum_{s in T} h_s`` and misses ``M(T) = sum_{s in T} m_s``, and
``IoU(T) = I / (H + M)``. A node C of the search is a left-deep formula with ``I_C``, ``M_C``;
its descendants append ``op u`` (op in OR, AND, AND NOT) while ``r`` length units remain.

**The miss curve (label-set level).** Let ``phi(x)`` be the least misses of any fractional
choice of label sets with at least x hits: the linear relaxation of a knapsack, solved by
taking sets in ascending ``m_s / h_s`` (Dantzig), so ``phi`` is convex, piecewise linear
through the cumulative (hits, misses) of that order. Every set of label sets T has
``M(T) >= phi(I(T))`` (an integral choice is a fractional one). Hence
``IoU(T) <= g(I(T))`` with ``g(x) = x / (H + phi(x))``. ``g`` is quasi-concave (its
super-level sets ``{x : lambda * phi(x) - x + lambda * H <= 0}`` are convex since ``phi`` is)
and monotone on each linear piece, so its maximum ``g*`` is at a breakpoint ``x*`` and ``g``
is non-decreasing on ``[0, x*]``: for any cap X, ``max_{x <= X} g(x) = g(min(X, x*))``.
``g*`` bounds every formula of the space (Dinkelbach's best union of label sets).

**What the operators can add (formula level).** A descendant D of C selects
``T_D`` inside ``T_C`` union the atoms it ORs in: AND and AND NOT only remove label sets. So
with ``j`` ORs, ``I_D <= min(H, I_C + S_j)``, S_j the sum of the j largest hits any atom can
add (its hits outside T_C; bounded by the atom's hits ``I_u``, or, for a child of P by OR, by
its hits outside T_P, since ``T_C`` contains ``T_P``).

- A descendant using only ORs (1 <= j <= r) keeps every set of C, so ``M_D >= M_C``:
  ``IoU_D <= min(X_r / (H + M_C), g(min(X_r, x*)))`` with ``X_r = min(H, I_C + S_r)``.
- A descendant using at least one AND or AND NOT has at most r - 1 ORs:
  ``IoU_D <= g(min(x*, I_C + S_{r-1}))``; with r = 1 this is ``g(min(x*, I_C))``, the best
  any subset of ``T_C`` can do.

The bound of C's subtree is the larger of the two (C's own IoU is computed exactly); both are
<= ``g*`` <= 1. Tested for admissibility against every completion on random maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MissCurve:
    """The convex miss curve ``phi`` of one unit mask (see the module docstring).

    Attributes:
        hits: (k + 1,) float64 cumulative hits at the breakpoints, starting at 0.
        misses: (k + 1,) float64 cumulative misses there.
        unit: H, the unit mask's pixels.
        x_star: the breakpoint where ``g`` is largest; g_star its value.
    """

    hits: np.ndarray
    misses: np.ndarray
    unit: float
    x_star: float
    g_star: float

    @classmethod
    def build(cls, h: np.ndarray, c: np.ndarray, unit: float) -> MissCurve:
        """The curve of per-set hits ``h`` and pixels ``c``, (n_sets,) float64 each."""
        hit = h > 0
        hh, mm = h[hit], (c - h)[hit]
        order = np.lexsort((-hh, mm / hh))  # ascending misses per hit
        hits = np.concatenate([[0.0], np.cumsum(hh[order])])
        misses = np.concatenate([[0.0], np.cumsum(mm[order])])
        with np.errstate(invalid="ignore", divide="ignore"):
            g = np.where(hits > 0, hits / np.maximum(unit + misses, 1e-300), 0.0)
        best = int(np.argmax(g))
        return cls(hits, misses, float(unit), float(hits[best]), float(g[best]))

    def g(self, x: np.ndarray) -> np.ndarray:
        """``max_{y <= x} y / (H + phi(y))`` for (n,) float64 caps x (0 where H = 0)."""
        x = np.minimum(np.asarray(x, dtype=np.float64), self.x_star)
        if self.unit <= 0:
            return np.zeros_like(x)
        return np.maximum(x, 0.0) / (self.unit + np.interp(x, self.hits, self.misses))


def top_sums(gains: np.ndarray, r: int) -> np.ndarray:
    """(r + 1,) float64: the sums of the 0..r largest of ``gains`` (fewer if fewer exist)."""
    k = min(r, gains.size)
    top = -np.sort(-gains)[:k] if k else np.zeros(0)
    sums = np.concatenate([[0.0], np.cumsum(top)])
    return np.concatenate([sums, np.full(r + 1 - sums.size, sums[-1])])


def subtree_bound(curve: MissCurve, inter: np.ndarray, misses: np.ndarray, remaining: np.ndarray,
                  sums: np.ndarray) -> np.ndarray:
    """Upper bound of the IoU of every strict descendant of each node (module docstring).

    Args:
        curve: the unit's miss curve.
        inter, misses: (n,) float64 I_C and M_C of the nodes.
        remaining: (n,) int64 length units r each node may still add (>= 1).
        sums: (n, R + 1) or (R + 1,) float64, column j the sum of the j largest hits an OR may
            add below that node (:func:`top_sums`), R >= max(remaining).

    Returns:
        (n,) float64 bounds in [0, 1].
    """
    sums = np.broadcast_to(sums, (inter.size, sums.shape[-1]))
    rows = np.arange(inter.size)
    unit = curve.unit
    if unit <= 0:
        return np.zeros(inter.size)
    cap_or = np.minimum(unit, inter + sums[rows, remaining])
    only_or = np.minimum(cap_or / (unit + misses), curve.g(cap_or))
    mixed = curve.g(np.minimum(unit, inter + sums[rows, remaining - 1]))
    return np.maximum(only_or, mixed)


def or_bound(curve: MissCurve, inter: np.ndarray, misses: np.ndarray, gain: np.ndarray,
             atom_inter: np.ndarray, atom_miss: np.ndarray) -> np.ndarray:
    """Upper bound of ``IoU(C OR u)`` over every atom u, for nodes C with ``inter`` hits and
    ``misses`` misses, (n,) float64 each; ``gain`` (n,) the most hits one atom can add.

    ``C OR u`` has at most ``I_C + min(I_u, gain)`` hits and at least ``max(M_C, M_u)``
    misses (u's misses outside C are at least ``M_u - M_C``). For u with ``M_u <= M_C`` the
    IoU is at most ``(I_C + max I_u) / (H + M_C)``; for the others at most
    ``I_C / (H + M_C) + I_u / (H + M_u)``. Both maxima over u come from prefix / suffix maxima
    over the atoms sorted by misses (``atom_inter``, ``atom_miss`` (A,) float64). The result
    is also capped by the one-OR case of :func:`subtree_bound`.
    """
    unit = curve.unit
    if unit <= 0:
        return np.zeros(inter.size)
    order = np.argsort(atom_miss, kind="stable")
    m_sorted = atom_miss[order]
    prefix = np.maximum.accumulate(atom_inter[order])
    ratio = atom_inter[order] / (unit + m_sorted)
    suffix = np.maximum.accumulate(ratio[::-1])[::-1]
    cut = np.searchsorted(m_sorted, misses, side="right")  # atoms [0, cut) have M_u <= M_C
    best_in = np.where(cut > 0, prefix[np.maximum(cut - 1, 0)], 0.0)
    best_out = np.where(cut < m_sorted.size, suffix[np.minimum(cut, m_sorted.size - 1)], 0.0)
    cap = np.minimum(unit, inter + np.minimum(best_in, gain))
    refined = np.maximum(cap / (unit + misses), inter / (unit + misses) + best_out)
    one = np.minimum(unit, inter + gain)
    simple = np.minimum(one / (unit + misses), curve.g(one))
    return np.minimum(refined, simple)
