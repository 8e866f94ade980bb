"""A test of whether any descendant of a node can reach a given IoU, from label-set profits.

Notation of :mod:`ray_dissect.explain.bounds`: label set s has ``h_s`` hits and ``m_s``
misses, H = |B| > 0, a formula selects label sets T and ``IoU(T) = I(T) / (H + M(T))``.

**Profit at a level.** For a level ``lam`` let ``p_s = h_s - lam * m_s`` and
``P(T) = sum_{s in T} p_s = I(T) - lam * M(T)`` (additive over disjoint sets). Then
``IoU(T) >= lam`` iff ``P(T) >= lam * H`` (multiply by ``H + M(T) > 0``): Dinkelbach's
parametric form. The largest profit of any subset of a set family X is
``F(X) = sum_{s in X} max(0, p_s)`` (each set is taken alone iff its profit is positive),
one sparse product for every atom or node at once.

**A node's subtree.** Every descendant D of a node C selects label sets inside C or in the
atoms it ORs in (AND and AND NOT only remove sets, as in :mod:`ray_dissect.explain.bounds`):
``T_D = (T_D & T_C) | (T_D & T_u1 - T_C) | ...`` with one part per OR, each a subset of C or
of one atom. So ``P(D) <= F(C) + S_j``, ``S_j`` the sum of the j largest atom profits
``F(u)``, j <= r the length units left: D can reach ``lam`` only if
``F(C) + S_r >= lam * H``. With one unit left (the last step) it splits: ``C OR u`` has
``P = P(C) + P(T_u - T_C) <= P(C) + max_u F(u)``, and ``C AND u``, ``C AND NOT u`` are subsets
of C, ``P <= F(C)``.

**A child's F from its parent's** (no product per child): ``P' = P op t`` is a subset of
``P | t`` (OR: ``F(P') <= F(P) + F(t)``, F being additive over disjoint parts and monotone),
of P and of t (AND: ``<= min(F(P), F(t))``) or of P (AND NOT: ``<= F(P)``).

Float sums of profits are off by far less than ``TOL`` of the pixels of all label sets, so
a test that fails by more than that proves the exact one fails: every descendant of the
node has IoU < ``lam``. The callers take ``lam`` at or below the incumbent's IoU, so only
subtrees strictly worse than it are dropped (pruning rule 1 of
:mod:`ray_dissect.explain.optimal`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

TOL = 1e-9  # of the pixels of all label sets: the float error allowed in a profit


@dataclass(frozen=True)
class Profits:
    """Label-set profits of one unit at one level.

    Attributes:
        level: lam, the IoU tested (> 0).
        sets: (n_sets,) float64 ``max(0, h_s - lam * m_s)`` (0 for a set without hits).
        atoms: (A,) float64 ``F(u)`` of every atom.
        top: (R + 1,) float64 sums of the 0..R largest atom profits.
        need: ``lam * H`` less the tolerance: a profit bound below it proves IoU < lam.
    """

    level: float
    sets: np.ndarray
    atoms: np.ndarray
    top: np.ndarray
    need: float

    @classmethod
    def build(cls, level: float, h: np.ndarray, m: np.ndarray, b_sets: np.ndarray,
              atom_hit_sets: sp.csr_matrix, unit: float, r: int) -> Profits:
        """At ``level`` > 0, from the (n_sets,) float64 hits ``h`` and misses ``m`` of every
        set, the (n_hit,) int64 sets with hits and the (A, n_hit) CSR atom membership of
        those, H = ``unit`` and the most length units ``r`` any node has left."""
        sets = np.maximum(0.0, h - level * m)
        atoms = atom_hit_sets @ sets[b_sets]
        top = -np.sort(-atoms)[:r] if r > 0 else np.zeros(0)
        sums = np.concatenate([[0.0], np.cumsum(top)])
        sums = np.concatenate([sums, np.full(r + 1 - sums.size, sums[-1])])
        pixels = float(h.sum() + m.sum())
        return cls(level, sets, atoms, sums, level * unit - TOL * (pixels + unit))

    def of_nodes(self, f: sp.spmatrix) -> np.ndarray:
        """(k,) float64 ``F(C)`` of k nodes from their (n_sets, k) 0/1 set membership."""
        return np.asarray(f.T @ self.sets).ravel()

    def subtree_reach(self, own: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """(k,) bool: some strict descendant of each node may reach the level, from ``own``
        (k,) float64 ``F(C)`` (or a bound of it) and (k,) int64 length units left (>= 1)."""
        return own + self.top[remaining] >= self.need

    def children(self, parent: np.ndarray, node: np.ndarray, op: np.ndarray,
                 col: np.ndarray) -> np.ndarray:
        """(n,) float64 bounds of ``F(P op t)`` of the children (node, op, atom col) of
        nodes with ``parent`` (k,) float64 ``F(P)`` (op OR 0, AND 1, AND NOT 2)."""
        fp, ft = parent[node], self.atoms[col]
        return np.where(op == 0, fp + ft, np.where(op == 1, np.minimum(fp, ft), fp))

    def last_reach(self, sub: np.ndarray, inter: np.ndarray, area: np.ndarray) -> np.ndarray:
        """(n,) bool: some child ``C op u`` of each node C with one length unit left may reach
        the level; ``sub`` a bound of ``F(C)``, ``inter`` and ``area`` (n,) float64 its exact
        hits and pixels (module docstring)."""
        own = inter - self.level * (area - inter)
        return (own + self.top[min(1, self.top.size - 1)] >= self.need) | (sub >= self.need)

    def gate(self, cols: np.ndarray, ops: np.ndarray, inter: np.ndarray, area: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The test for the children ``C op u`` of two-atom nodes C (``cols``, ``ops`` (k, 2)
        int64, exact ``inter`` hits and ``area`` pixels (k,) float64): (A,) float64 ``F(u)``,
        (k,) float64 the least ``F(u)`` that ``C OR u`` needs (``P(C OR u) <= P(C) + F(u)``)
        and (k,) bool whether ``F(C)``, bounded from its atoms, reaches the level (the
        AND / AND NOT children are subsets of C)."""
        sub = self.children(self.atoms, cols[:, 0], ops[:, 1], cols[:, 1])
        own = inter - self.level * (area - inter)
        return self.atoms, self.need - own, sub >= self.need
