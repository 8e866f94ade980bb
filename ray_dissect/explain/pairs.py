"""Bounds of the last step ``C op u`` from pairwise atom overlaps, before scoring it.

Scoring a node's children exactly (:meth:`ray_dissect.explain.bounds.Unit.children`) costs
two sparse products per node; most of that is spent on nodes whose every child is final (one
length unit left) and below the incumbent. This module bounds each final child ``C op u``
from counts known before any product: the atoms' overlaps with each other, so a node none of
whose children can reach the incumbent is not expanded, and an expanded node's children are
scored only for the atoms whose bound reaches it (a column subset).

Notation (one unit mask B, as in :mod:`ray_dissect.explain.bounds`): for a set X of pixels,
``I(X)`` its hits (pixels in B) and ``M(X)`` its misses; H = I of everything = |B|. Every
statement below holds for I and for M separately (both are counting measures), written
``|X|``. The pairwise table holds ``|a & u|`` for every pair of atoms (both measures), the
diagonal ``|a|``.

**The overlap of a two-atom node with an atom.** Let C = a op b (op in OR, AND, AND NOT) and
``T = |a & b & u|``. Three subsets of one set give lower bounds on T: a & u and b & u lie in
u, so ``T >= |a&u| + |b&u| - |u|``; a & u and a & b lie in a, so ``T >= |a&u| + |a&b| - |a|``;
likewise in b, ``T >= |b&u| + |a&b| - |b|``; and ``T >= 0``. Being inside each of a & u,
b & u and a & b, ``T <= min(|a&u|, |b&u|, |a&b|)``. Then ``|C & u|`` is exactly
``|a&u| + |b&u| - T`` (OR: inclusion-exclusion), ``T`` (AND) or ``|a&u| - T`` (AND NOT:
a & u less its part in b), so each lies in the interval given by the bounds of T. A node of
one atom C = a has ``|C & u| = |a & u|`` exactly.

**The children.** With ``I_C``, ``M_C`` exact and ``I_ov``, ``M_ov`` = ``I(C & u)``,
``M(C & u)`` in ``[lo, hi]``:

- ``C OR u``: hits ``I_C + I_u - I_ov``, misses ``M_C + M_u - M_ov``, so
  ``IoU <= min(H, I_C + I_u - I_lo) / (H + M_C + M_u - M_hi)``;
- ``C AND u``: hits ``I_ov``, misses ``M_ov``: ``IoU <= I_hi / (H + M_lo)``;
- ``C AND NOT u``: hits ``I_C - I_ov``, misses ``M_C - M_ov``:
  ``IoU <= (I_C - I_lo) / (H + M_C - M_hi)``.

Each largest numerator over the least denominator bounds the true ratio (hits and misses are
non-negative, H > 0), so every bound is admissible; with exact overlaps (one-atom nodes) they
are the exact IoUs. Counts are integers, exact in float64, and the callers prune only below
the incumbent less a margin, so rounding of the division cannot drop a tie.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.jit import kernel_name
from ray_dissect.explain.pair_kernel import reach_neighbors


@dataclass(frozen=True)
class Pairs:
    """Pairwise overlaps of the atoms for one unit mask.

    Attributes:
        hits: (A, A) float64 ``I(a & u)``, its diagonal ``I(a)``.
        misses: (A, A) float64 ``M(a & u)``, its diagonal ``M(a)``.
        unit: H, the unit mask's pixels.
        adjacent: (A, A) bool atoms sharing a pixel (unit-free, :class:`AtomTables`).
        neighbors: the same as (A, A) CSR, its rows the atoms each atom meets.
    """

    hits: np.ndarray
    misses: np.ndarray
    unit: float
    adjacent: np.ndarray
    neighbors: sp.csr_matrix

    @classmethod
    def build(cls, tables: AtomTables, hit_sets: sp.csr_matrix, h: np.ndarray, unit: float
              ) -> Pairs:
        """From the space's ``tables`` (with pixels), the (A, n_hit) CSR 0/1 atom membership
        of the sets with hits and ``h`` (n_hit,) float64 their hits."""
        assert tables.pixels is not None and tables.neighbors is not None
        hits = np.rint((hit_sets @ sp.csr_matrix(hit_sets.multiply(h[None, :])).T).toarray())
        return cls(hits, tables.pixels - hits, float(unit), tables.pixels > 0, tables.neighbors)


def overlap_pixels(atom_sets: sp.csr_matrix, set_counts: np.ndarray) -> np.ndarray:
    """(A, A) float64 pixels of ``a & u`` for every pair of atoms, from the (A, n_sets)
    CSR 0/1 membership and the (n_sets,) float64 pixels per set (unit-free: once per space)."""
    weighted = sp.csr_matrix(atom_sets.multiply(set_counts[None, :]))
    return np.rint((atom_sets @ weighted.T).toarray())


def _overlap(table: np.ndarray, a: np.ndarray, b: np.ndarray | None, op: np.ndarray,
             size: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least and most ``|C & u|`` (one measure, ``table`` its (A, A) pairwise overlaps) for
    nodes C = a op b (C = a when ``b`` is None) of ``size`` = ``|C|`` and atoms u; int64
    atoms ``a``, ``b``, ``u`` and ``op`` (OR 0, AND 1, AND NOT 2), float64 ``size``, all
    broadcast together (module docstring)."""
    ov_a = table[a, u]
    if b is None:
        return ov_a, ov_a
    ov_b, ab, diag = table[b, u], table[a, b], np.diagonal(table)
    t_hi = np.minimum(np.minimum(ov_a, ov_b), ab)
    t_lo = np.maximum(np.maximum(0.0, ov_a + ov_b - diag[u]),
                      np.maximum(ov_a + ab - diag[a], ov_b + ab - diag[b]))
    lo = np.where(op == 0, ov_a + ov_b - t_hi, np.where(op == 1, t_lo, ov_a - t_hi))
    hi = np.where(op == 0, ov_a + ov_b - t_lo, np.where(op == 1, t_hi, ov_a - t_lo))
    return np.minimum(lo, size), np.minimum(hi, size)


def _child_bounds(pairs: Pairs, a: np.ndarray, b: np.ndarray | None, op: np.ndarray,
                  inter: np.ndarray, area: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(3, *shape) float64 bounds of ``IoU(C OR u)``, ``IoU(C AND u)``, ``IoU(C AND NOT u)``
    for nodes C = a op b with ``inter`` hits and ``area`` pixels (arguments as
    :func:`_overlap`, broadcast together to ``shape``; H > 0)."""
    ic, mc, big = inter, area - inter, pairs.unit
    i_lo, i_hi = _overlap(pairs.hits, a, b, op, ic, u)
    m_lo, m_hi = _overlap(pairs.misses, a, b, op, mc, u)
    iu, mu = np.diagonal(pairs.hits)[u], np.diagonal(pairs.misses)[u]
    return np.stack(np.broadcast_arrays(
        np.minimum(big, ic + iu - i_lo) / (big + mc + mu - m_hi),
        i_hi / (big + m_lo),
        (ic - i_lo) / (big + mc - m_hi)))


def _second(cols: np.ndarray, ops: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """The second atom (None for one-atom nodes) and its op, (k,) int64 each."""
    if cols.shape[1] == 1:
        return None, np.zeros(cols.shape[0], dtype=np.int64)
    return cols[:, 1], ops[:, 1]


def last_step_bounds(pairs: Pairs, cols: np.ndarray, ops: np.ndarray, inter: np.ndarray,
                     area: np.ndarray) -> np.ndarray:
    """(k, 3, A) float64 upper bounds of ``IoU(C op u)`` (op OR, AND, AND NOT) for the k
    nodes C of one or two atoms (``cols``, ``ops`` (k, d) int64, d <= 2) with ``inter`` hits
    and ``area`` pixels, (k,) float64 each (module docstring; 0 where H = 0)."""
    k, n = cols.shape[0], pairs.hits.shape[0]
    if pairs.unit <= 0:
        return np.zeros((k, 3, n))
    b, op = _second(cols, ops)
    out = _child_bounds(pairs, cols[:, :1], None if b is None else b[:, None], op[:, None],
                        inter[:, None], area[:, None], np.arange(n)[None, :])
    return np.moveaxis(out, 0, 1)


def _rows(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of the CSR ``m`` in ``rows`` (k,) int64: (n,) int64 position in ``rows``
    and column of each."""
    start, counts = m.indptr[rows], m.indptr[rows + 1] - m.indptr[rows]
    owner = np.repeat(np.arange(rows.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, m.indices[np.arange(owner.size) - first + np.repeat(start, counts)]


TOP = 8  # atoms tried, best first, for the best one disjoint from a node


def _disjoint_or(pairs: Pairs, a: np.ndarray, b: np.ndarray, inter: np.ndarray,
                 area: np.ndarray, floor: float) -> np.ndarray:
    """(k,) bool: some atom u meeting neither a nor b has ``IoU(C OR u) >= floor``.

    For such u, ``C OR u`` has exactly ``I_C + I_u`` hits and ``M_C + M_u`` misses, and its
    IoU reaches ``floor`` iff ``s_u = I_u - floor * M_u >= floor * (H + M_C) - I_C``. The
    atoms are tried in descending ``s_u``; the first not meeting a or b has the largest
    ``s_u`` of them, and when the first ``TOP`` all meet one, the next ``s_u`` is above
    every later one (a test on a superset: admissible)."""
    hits, misses = np.diagonal(pairs.hits), np.diagonal(pairs.misses)
    score = hits - floor * misses
    top = np.argsort(-score, kind="stable")[:TOP + 1]
    tried = top[:TOP]
    meets = pairs.adjacent[a[:, None], tried[None, :]] | pairs.adjacent[b[:, None], tried[None, :]]
    free = ~meets
    pick = np.where(free.any(axis=1), score[tried][np.argmax(free, axis=1)],
                    score[top[-1]] if top.size > TOP else -np.inf)
    need = floor * (pairs.unit + area - inter) - inter
    return pick >= need - 1e-9 * (pairs.unit + area)


def _allowed(rank: np.ndarray, b: np.ndarray, op: np.ndarray, u: np.ndarray,
             allow_not: bool) -> np.ndarray:
    """(3, n) bool: whether ``(a op b) op2 u`` (op2 OR, AND, AND NOT) is in the space and
    kept by pruning rule 2 of :mod:`ray_dissect.explain.optimal` (the order of commuting
    runs), for (n,) int64 ``b``, ``op``, ``u`` and the atoms' string ``rank`` (A,) int64."""
    n = rank.size
    prev = rank[b] + np.where(op == 2, n, 0)
    out = np.empty((3, u.size), dtype=bool)
    for op2 in range(3):
        key = rank[u] + (n if op2 == 2 else 0)
        out[op2] = ((op == 0) != (op2 == 0)) | (key > prev)
    out[2] &= allow_not
    return out


def last_step_reach(pairs: Pairs, cols: np.ndarray, ops: np.ndarray, inter: np.ndarray,
                    area: np.ndarray, floor: float, rank: np.ndarray, allow_not: bool,
                    gate: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                    ) -> np.ndarray:
    """(k,) bool: whether some child ``C op u`` of each two-atom node (``cols``, ``ops``
    (k, 2) int64, ``inter`` hits and ``area`` pixels (k,) float64) may have IoU >= ``floor``;
    ``rank`` and ``allow_not`` (AND NOT children fit the length) as :func:`_allowed`.

    Atoms u meeting a or b get the bounds of :func:`last_step_bounds` (a few per node: the
    atoms meet few others), children outside the space or dropped by pruning rule 2 left
    out; for the other atoms ``|C & u| = 0`` and the children are exact: ``C AND u`` is
    empty (IoU 0), ``C AND NOT u`` is C (its own IoU), ``C OR u`` is tested by
    :func:`_disjoint_or`. So every child that reaches ``floor`` is found.

    ``gate`` (the profit test of :mod:`ray_dissect.explain.profit` at ``floor``): (A,)
    float64 ``F(u)``, (k,) float64 the least ``F(u)`` a ``C OR u`` needs (``lam * H - P(C)``)
    and (k,) bool whether C's subsets may reach ``floor``; a scanned child failing it is
    below the floor (its profit bound proves it) and is left out."""
    k, (a, b), op = cols.shape[0], cols.T, ops[:, 1]
    gain, or_need, subsets = gate if gate is not None else (
        np.zeros(pairs.hits.shape[0]), np.full(k, -np.inf), np.ones(k, dtype=bool))
    if pairs.unit <= 0:
        return np.full(k, floor <= 0)
    own = inter / (pairs.unit + area - inter)
    reach = (own >= floor) | (floor <= 0) | _disjoint_or(pairs, a, b, inter, area, floor)
    if kernel_name() == "numba":
        nb = pairs.neighbors
        reach_neighbors(pairs.hits, pairs.misses, nb.indptr, nb.indices, pairs.adjacent, rank,
                        a, b, op, inter, area, pairs.unit, floor, allow_not, reach,
                        (gain, or_need, subsets))
        return reach
    for side in (a, b):
        node, u = _rows(pairs.neighbors, side)
        keep = (u != a[node]) & (u != b[node])
        node, u = node[keep], u[keep]
        bound = _child_bounds(pairs, a[node], b[node], op[node], inter[node], area[node], u)
        ok = _allowed(rank, b[node], op[node], u, allow_not)
        ok &= np.stack([gain[u] >= or_need[node], subsets[node], subsets[node]])
        hit = ((bound >= floor) & ok).any(axis=0)
        reach |= np.bincount(node, weights=hit, minlength=k) > 0
    return reach


MAX_PAIR_ATOMS = 2048  # the (A, A) tables take 8 A^2 bytes each; larger spaces go without


@dataclass(frozen=True)
class AtomTables:
    """The unit-free arrays of one search space that every unit's search reads: built once
    per space (:func:`atom_tables`), not once per unit.

    Attributes:
        atom_sets: (A, n_sets) CSR 0/1 float64 the sets of each atom.
        atom_sets_t: its (n_sets, A) CSC transpose.
        rank: (A,) int64 each atom's place in the string order of the atom ids.
        pixels: (A, A) float64 pixels of ``a & u`` (:func:`overlap_pixels`), or None when
            A > ``MAX_PAIR_ATOMS``.
        neighbors: (A, A) CSR of ``pixels > 0`` (None with pixels).
    """

    atom_sets: sp.csr_matrix
    atom_sets_t: sp.csc_matrix
    rank: np.ndarray
    pixels: np.ndarray | None
    neighbors: sp.csr_matrix | None

    @classmethod
    def build(cls, membership_t: sp.csr_matrix, set_counts: np.ndarray, atoms: np.ndarray
              ) -> AtomTables:
        """From the (n_labels, n_sets) CSR membership, (n_sets,) float64 pixels per set and
        the (A,) int64 atom labels."""
        atom_sets = membership_t[atoms].tocsr().astype(np.float64)
        rank = np.argsort(np.argsort([str(int(a)) for a in atoms], kind="stable"))
        pixels = overlap_pixels(atom_sets, set_counts) if atoms.size <= MAX_PAIR_ATOMS else None
        neighbors = None if pixels is None else sp.csr_matrix(pixels > 0)
        return cls(atom_sets, sp.csc_matrix(atom_sets.T), rank, pixels, neighbors)


_TABLES: dict[int, tuple[weakref.ref[object], AtomTables]] = {}


def atom_tables(space: object, membership_t: sp.csr_matrix, set_counts: np.ndarray,
                atoms: np.ndarray) -> AtomTables:
    """The tables of ``space`` (the object the arrays belong to), built on first use and
    kept while ``space`` lives (a search task explains many units with one space)."""
    key = id(space)
    found = _TABLES.get(key)
    if found is not None and found[0]() is space:
        return found[1]
    tables = AtomTables.build(membership_t, set_counts, atoms)
    _TABLES[key] = (weakref.ref(space, lambda _: _TABLES.pop(key, None)), tables)
    return tables
