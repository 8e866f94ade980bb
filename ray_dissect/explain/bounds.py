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
<= ``g*`` <= 1. With one atom left two refinements apply: :func:`or_bound` (an OR keeps at
least ``max(M_C, M_u)`` misses) and, for an AND / AND NOT child, its parent's own miss curve
(the child and its AND / AND NOT completions are subsets of the parent;
:meth:`Unit.subset_curves`). Tested for admissibility against every completion on random maps.

**Batched expansion** (:class:`Unit`, :class:`Batch`): nodes of one depth as arrays, the exact
counts of all their children (every atom under every op) from two sparse products, the
pruning rules 2 and 3 of :mod:`ray_dissect.explain.optimal` vectorised, and the children's
bounds.

A node is a left-deep formula given by atom columns (into ``SearchSpace.atoms``) and ops
(OR 0, AND 1, AND NOT 2; -1 for the root). A batch of k nodes of depth d is ``cols``,
``ops`` (k, d) int64, ``inter``, ``area`` (k,) float64 and ``size`` (k,) int64 length units.
Expanding it builds the sparse (n_sets, k) membership of the nodes and multiplies the
(A, n_sets) atom membership by it, weighted by pixels and by hits: (k, A) intersections with
every atom, in chunks whose (k, 3, A) children arrays take about ``CHUNK_BYTES``. One-atom
nodes read the same counts from the unit's pairwise overlaps (:mod:`ray_dissect.explain.pairs`,
one sparse product per unit); the unit-free atom arrays are built once per space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.pairs import Pairs, atom_tables
from ray_dissect.explain.profit import Profits
from ray_dissect.explain.search import SearchParams, SearchSpace


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


def top_sums_rows(gains: np.ndarray, r: int) -> np.ndarray:
    """(k, r + 1) float64: :func:`top_sums` of each row of ``gains`` (k, n) float64, the same
    values (the r largest of each row, summed largest first)."""
    k, n = gains.shape
    if n == 0:
        return np.zeros((k, r + 1))
    m = min(r, n)
    if m == 1:  # one OR left: the row maxima, without a partition
        top = gains.max(axis=1, keepdims=True)
    else:
        top = -np.sort(-np.partition(gains, n - m, axis=1)[:, n - m:], axis=1)
    sums = np.concatenate([np.zeros((k, 1)), np.cumsum(top, axis=1)], axis=1)
    return np.concatenate([sums, np.repeat(sums[:, -1:], r + 1 - sums.shape[1], axis=1)], axis=1)


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
    # prefix[c] / suffix[c]: the best over atoms [0, c) / [c, A), 0 over none
    prefix = np.concatenate([[0.0], np.maximum.accumulate(atom_inter[order])])
    ratio = atom_inter[order] / (unit + m_sorted)
    suffix = np.concatenate([np.maximum.accumulate(ratio[::-1])[::-1], [0.0]])
    cut = np.searchsorted(m_sorted, misses, side="right")  # atoms [0, cut) have M_u <= M_C
    cap = np.minimum(unit, inter + np.minimum(prefix[cut], gain))
    den = unit + misses
    refined = np.maximum(cap / den, inter / den + suffix[cut])
    one = np.minimum(unit, inter + gain)
    simple = np.minimum(one / (unit + misses), curve.g(one))
    return np.minimum(refined, simple)


OR, AND, AND_NOT = 0, 1, 2
CHUNK_BYTES = 32 << 20  # the (k, 3, A) children arrays of one expansion chunk
MAX_CHUNK = 256  # nodes per expansion: smaller chunks let the incumbent prune sooner


@dataclass(frozen=True)
class Batch:
    """k nodes of one depth (module docstring)."""

    cols: np.ndarray
    ops: np.ndarray
    inter: np.ndarray
    area: np.ndarray
    size: np.ndarray

    def take(self, idx: np.ndarray) -> Batch:
        """The nodes ``idx`` (int array) of the batch."""
        return Batch(self.cols[idx], self.ops[idx], self.inter[idx], self.area[idx],
                     self.size[idx])


@dataclass
class Unit:
    """One unit mask against the search space: per-set hits ``h`` (n_sets,) float64, the
    atoms' hits ``atom_inter`` and pixels ``atom_area`` (A,) float64, their string ``rank``
    (A,) int64, the (A, n_sets) CSR ``atom_sets`` and its columns with hits ``atom_hit_sets``,
    the miss curve, and the global order of the sets with hits by misses per hit."""

    space: SearchSpace
    params: SearchParams
    unit: int
    h: np.ndarray
    b_sets: np.ndarray
    atom_sets: sp.csr_matrix
    atom_sets_t: sp.csc_matrix
    set_counts_col: np.ndarray
    atom_hit_sets: sp.csr_matrix
    atom_inter: np.ndarray
    atom_area: np.ndarray
    rank: np.ndarray
    curve: MissCurve
    ratio_order: np.ndarray
    chunk: int
    pairs: Pairs | None

    @classmethod
    def build(cls, mask: UnitMask, space: SearchSpace, params: SearchParams) -> Unit:
        n_sets = space.membership_t.shape[1]
        h = np.bincount(mask.sets, weights=mask.counts, minlength=n_sets)
        b_sets = np.flatnonzero(h)
        tables = atom_tables(space, space.membership_t, space.set_counts, space.atoms)
        hit_sets = tables.atom_sets[:, b_sets].tocsr()
        inter = np.rint(hit_sets @ h[b_sets])
        curve = MissCurve.build(h, space.set_counts, float(mask.area))
        hb, mb = h[b_sets], space.set_counts[b_sets] - h[b_sets]
        order = b_sets[np.lexsort((-hb, mb / hb))] if b_sets.size else b_sets
        chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // (24 * max(len(space.atoms), 1))))
        pairs = (None if tables.pixels is None
                 else Pairs.build(tables, hit_sets, h[b_sets], float(mask.area)))
        return cls(space, params, int(mask.area), h, b_sets, tables.atom_sets,
                   tables.atom_sets_t, space.set_counts[:, None], hit_sets, inter,
                   space.label_area[space.atoms].astype(np.float64), tables.rank, curve, order,
                   chunk, pairs)

    def profits(self, level: float) -> Profits | None:
        """The label-set profits at ``level`` (:mod:`ray_dissect.explain.profit`); None
        where the test proves nothing (level <= 0 or an empty unit mask)."""
        if level <= 0 or self.unit <= 0:
            return None
        return Profits.build(level, self.h, self.space.set_counts - self.h, self.b_sets,
                             self.atom_hit_sets, float(self.unit), self.params.length)

    def roots(self) -> Batch:
        """Every atom as a one-leaf node."""
        n = self.rank.size
        return Batch(np.arange(n)[:, None], np.full((n, 1), -1), self.atom_inter.copy(),
                     self.atom_area.copy(), np.ones(n, dtype=np.int64))

    def members(self, b: Batch) -> sp.csc_matrix:
        """(n_sets, k) 0/1 float64 CSC: the label sets each node selects (sparse: a node
        holds a few atoms' sets, so the products below cost what the nodes hold)."""
        f = self.atom_sets_t[:, b.cols[:, 0]]
        for j in range(1, b.cols.shape[1]):
            leaf = self.atom_sets_t[:, b.cols[:, j]]
            both = f.multiply(leaf)
            pick = [sp.diags((b.ops[:, j] == op).astype(np.float64)) for op in (OR, AND, AND_NOT)]
            f = (f + leaf - both) @ pick[OR] + both @ pick[AND] + (f - both) @ pick[AND_NOT]
        return sp.csc_matrix(f)

    def children(self, b: Batch, f: sp.csc_matrix, cols: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(k, 3, c) float64 hits and pixels of ``node op atom`` (f: :meth:`members`) for the
        atom columns ``cols`` (c,) int64, every atom when None."""
        if cols is None and b.cols.shape[1] == 1 and self.pairs is not None:
            return self._atom_children(b)
        sets, hit_sets, inter, area = (self.atom_sets, self.atom_hit_sets, self.atom_inter,
                                       self.atom_area)
        if cols is not None:
            sets, hit_sets, inter, area = sets[cols], hit_sets[cols], inter[cols], area[cols]
        x = (sets @ sp.csc_matrix(f.multiply(self.set_counts_col))).toarray().T
        fb = sp.csc_matrix(f[self.b_sets].multiply(self.h[self.b_sets][:, None]))
        y = (hit_sets @ fb).toarray().T
        i, a = b.inter[:, None], b.area[:, None]
        hits = np.rint(np.stack([i + inter - y, y, i - y], axis=1))
        pix = np.rint(np.stack([a + area - x, x, a - x], axis=1))
        return hits, pix

    def structural(self, b: Batch) -> np.ndarray:
        """(k, 3, A) bool: children in the space (distinct atoms, ``count_not`` length) and
        kept by pruning rule 2 (commuting runs); needs no counts."""
        k, n = b.cols.shape[0], self.rank.size
        ok = np.ones((k, 3, n), dtype=bool)
        rows = np.arange(k)
        for j in range(b.cols.shape[1]):
            ok[rows, :, b.cols[:, j]] = False
        if self.params.count_not:
            ok[:, AND_NOT] &= (b.size + 2 <= self.params.length)[:, None]
        last_op, last = b.ops[:, -1], b.cols[:, -1]
        prev = self.rank[last] + np.where(last_op == AND_NOT, n, 0)
        key = np.stack([self.rank, self.rank, self.rank + n])
        for op in (OR, AND, AND_NOT):
            tied = (last_op < 0) | ((last_op == OR) == (op == OR))
            ok[:, op] &= ~tied[:, None] | (key[op][None, :] > prev[:, None])
        return ok

    def _atom_children(self, b: Batch) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`children` of one-atom nodes, read from the pairwise overlaps (the same
        integer counts, without the sparse products)."""
        assert self.pairs is not None
        k, n = b.cols.shape[0], self.atom_inter.size
        hits, pix = np.empty((k, 3, n)), np.empty((k, 3, n))
        y = np.take(self.pairs.hits, b.cols[:, 0], axis=0, out=hits[:, AND])
        x = np.add(y, self.pairs.misses[b.cols[:, 0]], out=pix[:, AND])
        for out, c, whole, part in ((hits, b.inter, self.atom_inter, y),
                                    (pix, b.area, self.atom_area, x)):
            np.subtract(np.add(c[:, None], whole, out=out[:, OR]), part, out=out[:, OR])
            np.subtract(c[:, None], part, out=out[:, AND_NOT])
        return hits, pix

    def valid(self, b: Batch, pix: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """(k, 3, c) bool: children (``pix`` of :meth:`children` for the same ``cols``) in the
        space and kept by pruning rules 2 and 3."""
        ok, area = self.structural(b), self.atom_area
        if cols is not None:
            ok, area = ok[:, :, cols], area[cols]
        ok &= (pix != b.area[:, None, None]) & (pix > 0)
        ok[:, :AND_NOT] &= pix[:, :AND_NOT] != area
        return ok

    def subset_curves(self, f: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each node's own miss curve (its sets in the global misses-per-hit order):
        (k, m + 1) cumulative hits and misses, and (k,) the hits where its g peaks."""
        sel = sp.csr_matrix(f)[self.ratio_order].toarray().T
        hh = self.h[self.ratio_order]
        mm = self.space.set_counts[self.ratio_order] - hh
        zero = np.zeros((sel.shape[0], 1))
        hits = np.concatenate([zero, np.cumsum(sel * hh, axis=1)], axis=1)
        misses = np.concatenate([zero, np.cumsum(sel * mm, axis=1)], axis=1)
        g = hits / (self.unit + misses) if self.unit else hits
        return hits, misses, hits[np.arange(sel.shape[0]), np.argmax(g, axis=1)]

    def child_bounds(self, b: Batch, f: sp.csc_matrix, hits: np.ndarray, pix: np.ndarray,
                     idx: tuple[np.ndarray, np.ndarray, np.ndarray],
                     subsets: np.ndarray | None = None) -> np.ndarray:
        """(n,) float64 bound of the strict descendants of the children ``idx`` (node, op,
        atom) of ``b``, each with room to grow (see :mod:`ray_dissect.explain.bounds`).
        ``subsets`` (n,) bool False marks children whose subsets are proved below the floor
        (:mod:`ray_dissect.explain.profit`): with one atom left they get the OR bound alone,
        admissible where it reaches the floor (the subsets are below it), below the floor
        only where the whole subtree is."""
        node, op, _ = idx
        r, p = self.params.length, self.params
        grow = np.where((op == AND_NOT) & p.count_not, 2, 1)
        remaining = r - b.size[node] - grow
        gains = hits[:, OR] - b.inter[:, None]
        deep = max(int(remaining.max(initial=1)), 1)  # columns 0..deep of the sums are read
        sums = np.stack([top_sums_rows(gains, deep),
                         np.broadcast_to(top_sums(self.atom_inter, deep),
                                         (gains.shape[0], deep + 1))])
        flat = np.ravel_multi_index(idx, hits.shape)
        ci = hits.ravel()[flat]
        cm = pix.ravel()[flat] - ci
        row = np.minimum(op, 1) * gains.shape[0] + node
        last = remaining == 1
        if last.all():  # the usual case (length 3): no row selection
            return self._last_bounds(f, node, op, ci, cm, sums[:, :, 1].ravel()[row], subsets)
        sums = sums.reshape(-1, deep + 1)[row]
        bound = np.empty(ci.size)
        more = ~last
        if more.any():
            bound[more] = subtree_bound(self.curve, ci[more], cm[more], remaining[more],
                                        sums[more])
        if last.any():
            sub = None if subsets is None else subsets[last]
            bound[last] = self._last_bounds(f, node[last], op[last], ci[last], cm[last],
                                            sums[last, 1], sub)
        return bound

    def _last_bounds(self, f: sp.csc_matrix, node: np.ndarray, op: np.ndarray, ci: np.ndarray,
                     cm: np.ndarray, gain: np.ndarray, subsets: np.ndarray | None
                     ) -> np.ndarray:
        """Bounds of children with one atom to go: one OR (``or_bound``, ``gain`` (n,) float64
        the most hits one atom adds) or a subset of the child; an AND / AND NOT child is a
        subset of its parent, so of the parent's curve (only for the children ``subsets``
        marks, all when None: :meth:`child_bounds`)."""
        only_or = or_bound(self.curve, ci, cm, gain, self.atom_inter,
                           self.atom_area - self.atom_inter)
        if subsets is None:
            return self._with_subsets(f, node, op, ci, only_or)
        if subsets.any():
            only_or[subsets] = self._with_subsets(f, node[subsets], op[subsets], ci[subsets],
                                                  only_or[subsets])
        return only_or

    def _with_subsets(self, f: sp.csc_matrix, node: np.ndarray, op: np.ndarray, ci: np.ndarray,
                      only_or: np.ndarray) -> np.ndarray:
        """(n,) float64 the larger of ``only_or`` and the bound of the child's subsets (the
        global curve, and for AND / AND NOT children their parent's own curve)."""
        subset = self.curve.g(np.minimum(self.unit, ci))
        inside = op != OR
        if inside.any():
            hits, misses, peak = self.subset_curves(f)
            rows = np.flatnonzero(inside)
            rows = rows[np.argsort(node[rows], kind="stable")]
            nodes, first = np.unique(node[rows], return_index=True)
            for k, sel in zip(nodes, np.split(rows, first[1:]), strict=True):
                x = np.minimum(ci[sel], peak[k])
                own = x / np.maximum(self.unit + np.interp(x, hits[k], misses[k]), 1e-300)
                subset[sel] = np.minimum(subset[sel], own)
        return np.maximum(only_or, subset)
