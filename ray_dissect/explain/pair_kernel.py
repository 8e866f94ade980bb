"""The compiled (numba) form of :func:`ray_dissect.explain.pairs.last_step_reach`'s scan of
each node's neighbouring atoms.

The numpy code in :mod:`ray_dissect.explain.pairs` stays the reference: this kernel takes the
same float64 operations in the same order, atom by atom, and stops at a node's first child
that reaches the floor, so both give the same decisions (the tests run both). Which one runs
is :func:`ray_dissect.concepts.jit.kernel_name`'s choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect.concepts.jit import jit


@jit
def _range(t: Any, a: int, b: int, op: int, size: float, u: int
           ) -> tuple[float, float]:  # pragma: no cover - compiled
    """Least and most ``|C & u|`` of C = a op b in the measure of the (A, A) table ``t``
    (``pairs._overlap`` for one atom u)."""
    ov_a, ov_b, ab = t[a, u], t[b, u], t[a, b]
    t_hi = min(min(ov_a, ov_b), ab)
    t_lo = max(max(0.0, ov_a + ov_b - t[u, u]), max(ov_a + ab - t[a, a], ov_b + ab - t[b, b]))
    if op == 0:
        lo, hi = ov_a + ov_b - t_hi, ov_a + ov_b - t_lo
    elif op == 1:
        lo, hi = t_lo, t_hi
    else:
        lo, hi = ov_a - t_hi, ov_a - t_lo
    return min(lo, size), min(hi, size)


@jit
def _reaches(hits: Any, misses: Any, a: int, b: int, op: int, ic: float, mc: float, u: int,
             unit: float, floor: float, ok: Any) -> bool:  # pragma: no cover - compiled
    """Whether the bound of ``IoU(C op2 u)`` (``pairs._child_bounds``) is >= floor for some
    op2 with ``ok[op2]``."""
    i_lo, i_hi = _range(hits, a, b, op, ic, u)
    m_lo, m_hi = _range(misses, a, b, op, mc, u)
    return ((ok[0] and min(unit, ic + hits[u, u] - i_lo) / (unit + mc + misses[u, u] - m_hi)
             >= floor)
            or (ok[1] and i_hi / (unit + m_lo) >= floor)
            or (ok[2] and (ic - i_lo) / (unit + mc - m_hi) >= floor))


@jit
def _allowed(rank: Any, b: int, op: int, u: int, op2: int, allow_not: bool
             ) -> bool:  # pragma: no cover - compiled
    """Whether ``(a op b) op2 u`` is in the space and kept by pruning rule 2."""
    if op2 == 2 and not allow_not:
        return False
    n = rank.size
    prev = rank[b] + (n if op == 2 else 0)
    key = rank[u] + (n if op2 == 2 else 0)
    return (op == 0) != (op2 == 0) or key > prev


@jit
def reach_neighbors(hits: Any, misses: Any, indptr: Any, indices: Any, adjacent: Any, rank: Any,
                    a: Any, b: Any, op: Any, inter: Any, area: Any, unit: float, floor: float,
                    allow_not: bool, reach: Any, gate: Any) -> None:  # pragma: no cover - compiled
    """Set ``reach[i]`` (k,) bool where some allowed child ``(a op b) op2 u`` of node i, u a
    neighbour of a or b (CSR ``indptr``, ``indices``) other than a, b, has a bound >= floor;
    nodes already marked are skipped. Each such u is tested once: b's neighbours that also
    meet a (``adjacent`` (A, A) bool) were tested in a's list, so they are passed over.
    ``gate`` = (atom profits, each node's least profit for an OR child, whether its subsets
    may reach), as ``pairs.last_step_reach``."""
    gain, or_need, subsets = gate
    ok = np.zeros(3, dtype=np.bool_)
    for i in range(a.size):
        ai, bi, oi = a[i], b[i], op[i]
        ic = inter[i]
        mc = area[i] - ic
        for row in (ai, bi):
            if reach[i]:
                break
            for p in range(indptr[row], indptr[row + 1]):
                u = indices[p]
                if u == ai or u == bi or (row == bi and adjacent[ai, u]):
                    continue
                for op2 in range(3):
                    ok[op2] = _allowed(rank, bi, oi, u, op2, allow_not)
                ok[0] = ok[0] and gain[u] >= or_need[i]
                ok[1] = ok[1] and subsets[i]
                ok[2] = ok[2] and subsets[i]
                if not (ok[0] or ok[1] or ok[2]):
                    continue
                if _reaches(hits, misses, ai, bi, oi, ic, mc, u, unit, floor, ok):
                    reach[i] = True
                    break
