"""Batched expansion for the optimal search: nodes of one depth as arrays, the exact counts
of all their children (every atom under every op) from two sparse products, the pruning
rules 2 and 3 of :mod:`ray_dissect.explain.optimal` vectorised, and the children's bounds.

A node is a left-deep formula given by atom columns (into ``SearchSpace.atoms``) and ops
(OR 0, AND 1, AND NOT 2; -1 for the root). A batch of k nodes of depth d is ``cols``,
``ops`` (k, d) int64, ``inter``, ``area`` (k,) float64 and ``size`` (k,) int64 length units.
Expanding it builds the sparse (n_sets, k) membership of the nodes and multiplies the
(A, n_sets) atom membership by it, weighted by pixels and by hits: (k, A) intersections with
every atom, in chunks whose (k, 3, A) children arrays take about ``CHUNK_BYTES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.bounds import MissCurve, or_bound, subtree_bound, top_sums
from ray_dissect.explain.search import SearchParams, SearchSpace

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

    @classmethod
    def build(cls, mask: UnitMask, space: SearchSpace, params: SearchParams) -> Unit:
        n_sets = space.membership_t.shape[1]
        h = np.bincount(mask.sets, weights=mask.counts, minlength=n_sets)
        b_sets = np.flatnonzero(h)
        atom_sets = space.membership_t[space.atoms].tocsr().astype(np.float64)
        hit_sets = atom_sets[:, b_sets].tocsr()
        inter = np.rint(hit_sets @ h[b_sets])
        rank = np.argsort(np.argsort([str(int(a)) for a in space.atoms], kind="stable"))
        curve = MissCurve.build(h, space.set_counts, float(mask.area))
        hb, mb = h[b_sets], space.set_counts[b_sets] - h[b_sets]
        order = b_sets[np.lexsort((-hb, mb / hb))] if b_sets.size else b_sets
        chunk = max(1, min(MAX_CHUNK, CHUNK_BYTES // (24 * max(len(space.atoms), 1))))
        return cls(space, params, int(mask.area), h, b_sets, atom_sets,
                   sp.csc_matrix(atom_sets.T), space.set_counts[:, None], hit_sets, inter,
                   space.label_area[space.atoms].astype(np.float64), rank, curve, order, chunk)

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

    def children(self, b: Batch, f: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(k, 3, A) float64 hits and pixels of ``node op atom`` (f: :meth:`members`)."""
        x = (self.atom_sets @ sp.csc_matrix(f.multiply(self.set_counts_col))).toarray().T
        fb = sp.csc_matrix(f[self.b_sets].multiply(self.h[self.b_sets][:, None]))
        y = (self.atom_hit_sets @ fb).toarray().T
        i, a = b.inter[:, None], b.area[:, None]
        hits = np.rint(np.stack([i + self.atom_inter - y, y, i - y], axis=1))
        pix = np.rint(np.stack([a + self.atom_area - x, x, a - x], axis=1))
        return hits, pix

    def valid(self, b: Batch, pix: np.ndarray) -> np.ndarray:
        """(k, 3, A) bool: children in the space and kept by pruning rules 2 and 3."""
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
        ok &= (pix != b.area[:, None, None]) & (pix > 0)
        ok[:, :AND_NOT] &= pix[:, :AND_NOT] != self.atom_area
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
                     idx: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """(n,) float64 bound of the strict descendants of the children ``idx`` (node, op,
        atom) of ``b``, each with room to grow (see :mod:`ray_dissect.explain.bounds`)."""
        node, op, col = idx
        r, p = self.params.length, self.params
        grow = np.where((op == AND_NOT) & p.count_not, 2, 1)
        remaining = r - b.size[node] - grow
        gains = hits[:, OR] - b.inter[:, None]
        sums = np.stack([np.stack([top_sums(g, r) for g in gains]),
                         np.broadcast_to(top_sums(self.atom_inter, r), (gains.shape[0], r + 1))])
        ci, cm = hits[node, op, col], pix[node, op, col] - hits[node, op, col]
        bound = subtree_bound(self.curve, ci, cm, remaining, sums[np.minimum(op, 1), node])
        last = remaining == 1
        if last.any():
            bound[last] = self._last_bounds(f, node[last], op[last], ci[last], cm[last],
                                            sums[np.minimum(op[last], 1), node[last]])
        return bound

    def _last_bounds(self, f: sp.csc_matrix, node: np.ndarray, op: np.ndarray, ci: np.ndarray,
                     cm: np.ndarray, sums: np.ndarray) -> np.ndarray:
        """Bounds of children with one atom to go: one OR (``or_bound``) or a subset of the
        child; an AND / AND NOT child is a subset of its parent, so of the parent's curve."""
        only_or = or_bound(self.curve, ci, cm, sums[:, 1], self.atom_inter,
                           self.atom_area - self.atom_inter)
        subset = self.curve.g(np.minimum(self.unit, ci))
        inside = op != OR
        if inside.any():
            hits, misses, peak = self.subset_curves(f)
            for k in np.unique(node[inside]):
                sel = inside & (node == k)
                x = np.minimum(ci[sel], peak[k])
                own = x / np.maximum(self.unit + np.interp(x, hits[k], misses[k]), 1e-300)
                subset[sel] = np.minimum(subset[sel], own)
        return np.maximum(only_or, subset)
