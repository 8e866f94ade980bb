"""Guaranteed-optimal compositional explanations: branch and bound over label sets.

**The space** is exactly the beam search's (:mod:`ray_dissect.explain.search`): left-deep
formulas ``t1 op2 t2 ... opk tk`` of 1 to ``length`` atoms (AND NOT counting 2 with
``count_not``), op in OR, AND, AND NOT, distinct atoms taken from the search space's atoms
(labels with pixels), scored by the same plain IoU ``|B and F| / |B or F|``.

**The answer** is the first formula of the whole space in the beam's own order
(:func:`~ray_dissect.explain.search._sort_key`): exact IoU descending, then fewer leaves, then
the smaller :func:`~ray_dissect.explain.search.order_key` (plain string order). That order is
total (``order_key`` is injective), so the answer is unique: the tie rule. As the beam, a unit
where no atom has a hit gets no formula.

**The search.** Depth-first from every atom (the root), most promising first; the beam's
answer is the first incumbent. A node's children (every atom under every op) are computed at
once, exactly, by two sparse products, as the beam does; each child's subtree gets an
admissible upper bound (:mod:`ray_dissect.explain.bounds`) and is skipped when the bound is
below the incumbent's IoU. A ``budget`` (seconds and/or expansions) makes it anytime: the
proved bound is then the largest bound of the subtrees left.

**Pruning rules, and why each keeps the answer.** Each rule drops a formula G (with its
whole subtree) only when, for G and for every descendant of G, the space holds a formula with
the same IoU (the same label sets up to sets without pixels, which no count sees) and fewer
leaves, or the same leaves and a smaller ``order_key``: a strictly earlier formula in the
beam's order. So the answer, the first formula of the space, is never dropped, nor is any of
its prefixes (a dropped prefix would drop it).

1. *Bounds*: a subtree whose bound is below the incumbent's IoU holds nothing as good as the
   incumbent (admissibility; equal bounds are kept so ties are resolved by the rule).
2. *Commuting runs* (symmetry): ``(F OR a) OR b = (F OR b) OR a``, and AND / AND NOT
   commute the same way (``(F AND NOT a) AND b = (F AND b) AND NOT a``); the root joins the
   run its first operator starts (``t1 AND t2 = t2 AND t1``), but never as a negation. All
   orders of a run have the same leaves and the same operator tags in ``order_key``, whose
   text then compares as the run's elements in order, an atom as ``L<n>`` before a negated
   one ``N(L<n>)``. So within a run only strictly increasing (negated, ``str(n)``) keys are
   kept: the sorted order is in the space and earlier, and permuting G's part of a run
   permutes the same part of each descendant.
3. *Absorbed steps*: a child whose pixels equal its parent's (``F OR t`` with t inside F,
   ``F AND t`` with F inside t, ``F AND NOT t`` with t disjoint from F) is the parent with one
   more leaf; one equal to its atom t (``F OR t`` with F inside t, ``F AND t`` with t inside F)
   is the one-leaf formula t; an empty child (``F AND t`` disjoint, ``F AND NOT t`` with F
   inside t) has IoU 0, worse than any atom with a hit. Every descendant ``G op u ...`` equals
   ``P op u ...`` (resp. ``t op u ...``, or the atoms after its first OR, or stays empty),
   fewer leaves, same distinct atoms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.bounds import MissCurve, subtree_bound, top_sums
from ray_dissect.explain.formula import And, Formula, Leaf, Not, Or
from ray_dissect.explain.search import Scored, SearchParams, SearchSpace, _sort_key

OR, AND, AND_NOT = 0, 1, 2
MARGIN = 1e-12  # float bounds: a subtree is dropped only when clearly below the incumbent


@dataclass(frozen=True)
class Budget:
    """Limits of one optimal search (None: unlimited)."""

    seconds: float | None = None
    nodes: int | None = None


@dataclass(frozen=True)
class Certificate:
    """How good an explanation is proved to be.

    Attributes:
        search: ``beam`` or ``optimal``.
        optimal: the formula is proved to have the maximal IoU of the space.
        upper_bound: no formula of the space has a larger IoU (== iou when optimal).
        visited: exact IoUs computed by the search that gave the formula.
        expanded: nodes expanded (each: every atom under every op at once); 0 for beam.
        seconds: wall time of the optimal search (None for beam: records stay reproducible).
        start: the beam's answer the optimal search started from (None for beam).
    """

    search: Literal["beam", "optimal"]
    optimal: bool
    upper_bound: float
    visited: int
    expanded: int = 0
    seconds: float | None = None
    start: Scored | None = None


@dataclass(frozen=True)
class OptimalResult:
    """The best formula (None when no atom has a hit) and its certificate."""

    best: Scored | None
    certificate: Certificate


@dataclass
class _Unit:
    """Per-unit arrays: per-set hits ``h`` (n_sets,) float64, hits per atom ``atom_inter``
    and pixels ``atom_area`` (A,) float64, the atoms' string rank ``rank`` (A,) int64."""

    space: SearchSpace
    h: np.ndarray
    b_sets: np.ndarray
    mt_b: sp.csr_matrix
    unit: int
    atom_inter: np.ndarray
    atom_area: np.ndarray
    rank: np.ndarray
    curve: MissCurve
    params: SearchParams

    @classmethod
    def build(cls, mask: UnitMask, space: SearchSpace, params: SearchParams) -> _Unit:
        n_sets = space.membership_t.shape[1]
        h = np.bincount(mask.sets, weights=mask.counts, minlength=n_sets)
        b_sets = np.flatnonzero(h)
        mt_b = space.membership_t[:, b_sets].tocsr()
        inter = np.rint(mt_b @ h[b_sets])[space.atoms]
        rank = np.argsort(np.argsort([str(int(a)) for a in space.atoms], kind="stable"))
        curve = MissCurve.build(h, space.set_counts, float(mask.area))
        return cls(space, h, b_sets, mt_b, int(mask.area), inter,
                   space.label_area[space.atoms].astype(np.float64), rank, curve, params)

    def children(self, f: np.ndarray, inter: float, area: float) -> tuple[np.ndarray, np.ndarray]:
        """(3, A) float64 hits and pixels of ``F op t`` for every op and atom (F = ``f``)."""
        sp_ = self.space
        x = (sp_.membership_t @ (sp_.set_counts * f))[sp_.atoms]
        y = (self.mt_b @ (self.h[self.b_sets] * f[self.b_sets]))[sp_.atoms]
        hits = np.rint(np.stack([inter + self.atom_inter - y, y, inter - y]))
        pix = np.rint(np.stack([area + self.atom_area - x, x, area - x]))
        return hits, pix


@dataclass
class _Node:
    """A formula of the search: atom columns and ops (``ops[0]`` = -1 for the root)."""

    cols: tuple[int, ...]
    ops: tuple[int, ...]
    f: np.ndarray
    inter: float
    area: float
    size: int  # length units (leaves, plus NOTs with count_not)


@dataclass
class _State:
    """The incumbent and the counters of one search."""

    best: Scored | None
    visited: int = 0
    expanded: int = 0
    deadline: float = float("inf")
    nodes: int | None = None
    left: list[float] = field(default_factory=list)  # bounds of subtrees left by the budget

    def out_of_budget(self) -> bool:
        return (time.perf_counter() > self.deadline
                or (self.nodes is not None and self.expanded >= self.nodes))


def to_formula(node_cols: tuple[int, ...], ops: tuple[int, ...], atoms: np.ndarray) -> Formula:
    """The left-deep formula of atom columns ``node_cols`` joined by ``ops`` (ops[0] unused)."""
    f: Formula = Leaf(int(atoms[node_cols[0]]))
    for c, op in zip(node_cols[1:], ops[1:], strict=True):
        t = Leaf(int(atoms[c]))
        f = (Or(f, t), And(f, t), And(f, Not(t)))[op]
    return f


def _iou_ge(inter: np.ndarray, union: np.ndarray, best: Scored | None) -> np.ndarray:
    """(n,) bool: exact IoU inter/union (int64 counts) >= the incumbent's."""
    if best is None:
        return np.ones(inter.shape, dtype=bool)
    return inter * max(best.union, 1) >= best.inter * np.maximum(union, 1)


def _offer(state: _State, cands: list[Scored]) -> None:
    """Make the first of ``cands`` and the incumbent, in the beam's order, the incumbent."""
    pool = cands + ([state.best] if state.best is not None else [])
    state.best = min(pool, key=_sort_key)


def _offer_arrays(state: _State, u: _Unit, inter: np.ndarray, union: np.ndarray,
                  make: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> None:
    """Offer the formulas ``make[i]`` (cols, ops) with counts (n,) int64 ``inter``/``union``
    whose IoU reaches the incumbent's; float IoU narrows a long list to its top first."""
    idx = np.flatnonzero(_iou_ge(inter, union, state.best))
    if idx.size > 32:
        score = inter[idx] / np.maximum(union[idx], 1)
        idx = idx[score >= score.max() * (1 - 1e-9)]
    if idx.size:
        _offer(state, [Scored(to_formula(*make[int(i)], u.space.atoms), int(inter[i]),
                              int(union[i])) for i in idx])


def _keep(state: _State, bound: float) -> bool:
    """Whether a subtree with this bound may still hold the answer (pruning rule 1)."""
    return state.best is None or bound >= state.best.iou * (1 - 1e-9) - MARGIN


def _valid(u: _Unit, node: _Node, pix: np.ndarray) -> np.ndarray:
    """(3, A) bool: the children of ``node`` kept by the space and pruning rules 2 and 3."""
    n_atoms, p = u.rank.size, u.params
    ok = np.ones((3, n_atoms), dtype=bool)
    ok[:, list(node.cols)] = False
    if p.count_not and node.size + 2 > p.length:
        ok[AND_NOT] = False
    key = np.stack([u.rank, u.rank, u.rank + n_atoms])
    last_op, last = node.ops[-1], node.cols[-1]
    prev = u.rank[last] + (n_atoms if last_op == AND_NOT else 0)
    for op in (OR, AND, AND_NOT):
        if last_op < 0 or (op == OR) == (last_op == OR):
            ok[op] &= key[op] > prev
    ok &= (pix != node.area) & (pix > 0)
    ok[:AND_NOT] &= pix[:AND_NOT] != u.atom_area
    return ok


def _expand(u: _Unit, state: _State, node: _Node) -> bool:
    """Score every child of ``node`` exactly, then search the promising ones; False when the
    budget ran out (the bounds of what was left are in ``state.left``)."""
    state.expanded += 1
    hits, pix = u.children(node.f, node.inter, node.area)
    ok = _valid(u, node, pix)
    ops, cols = np.nonzero(ok)
    state.visited += ops.size
    inter, area = hits[ops, cols].astype(np.int64), pix[ops, cols].astype(np.int64)
    _offer_arrays(state, u, inter, u.unit + area - inter,
                  [((*node.cols, int(c)), (*node.ops, int(o))) for o, c in zip(ops, cols,
                                                                                strict=True)])
    grow = np.where((ops == AND_NOT) & u.params.count_not, 2, 1)
    deeper = node.size + grow < u.params.length
    ops, cols = ops[deeper], cols[deeper]
    if not ops.size:
        return True
    bound = child_bounds(u, node, hits, pix, ops, cols)
    return _descend(u, state, [(node, int(o), int(c)) for o, c in zip(ops, cols, strict=True)],
                    bound)


def child_bounds(u: _Unit, node: _Node, hits: np.ndarray, pix: np.ndarray, ops: np.ndarray,
                 cols: np.ndarray) -> np.ndarray:
    """(n,) float64 bound of the strict descendants of the children (ops, cols) of ``node``,
    from the children's (3, A) ``hits`` and ``pix``; each child must have room to grow.

    An OR child contains ``node``, so an atom adds at most its hits outside ``node``
    (``hits[OR] - node.inter``); an AND / AND NOT child at most the atom's hits.
    """
    r = u.params.length
    grow = np.where((ops == AND_NOT) & u.params.count_not, 2, 1)
    sums = np.stack([top_sums(hits[OR] - node.inter, r), top_sums(u.atom_inter, r)])
    return subtree_bound(u.curve, hits[ops, cols], pix[ops, cols] - hits[ops, cols],
                         r - node.size - grow, sums[np.minimum(ops, 1)])


def _child(u: _Unit, parent: _Node, op: int, col: int) -> _Node:
    """The node ``parent op atom[col]``."""
    leaf = u.space.leaf(int(u.space.atoms[col]))
    f = (parent.f | leaf, parent.f & leaf, parent.f & ~leaf)[op]
    grow = 2 if (op == AND_NOT and u.params.count_not) else 1
    return _Node((*parent.cols, col), (*parent.ops, op), f, float(u.h @ f),
                 float(u.space.set_counts @ f), parent.size + grow)


def _descend(u: _Unit, state: _State, todo: list[tuple[_Node | None, int, int]],
             bound: np.ndarray) -> bool:
    """Expand the nodes of ``todo`` (parent, op, col; parent None for a root) in descending
    ``bound`` order while their bound can reach the incumbent; False when the budget ran out
    (then the largest bound not searched is in ``state.left``)."""
    order = np.argsort(-bound, kind="stable")
    for k, i in enumerate(order):
        if not _keep(state, float(bound[i])):
            return True
        if state.out_of_budget():
            state.left.append(float(bound[i]))
            return False
        parent, op, col = todo[int(i)]
        node = _root(u, col) if parent is None else _child(u, parent, op, col)
        if not _expand(u, state, node):
            state.left.extend(bound[order[k + 1:k + 2]].tolist())
            return False
    return True


def _root(u: _Unit, col: int) -> _Node:
    """The one-atom node of atom column ``col``."""
    f = u.space.leaf(int(u.space.atoms[col]))
    return _Node((col,), (-1,), f, float(u.atom_inter[col]), float(u.atom_area[col]), 1)


def _root_bounds(u: _Unit) -> np.ndarray:
    """(A,) float64 bound of each root's strict descendants (0 with ``length`` 1)."""
    r = u.params.length - 1
    if r < 1:
        return np.zeros(u.rank.size)
    return subtree_bound(u.curve, u.atom_inter, u.atom_area - u.atom_inter,
                         np.full(u.rank.size, r), top_sums(u.atom_inter, r + 1))


def _unary(u: _Unit) -> tuple[np.ndarray, np.ndarray]:
    """(A,) int64 hits and union of every atom."""
    inter = u.atom_inter.astype(np.int64)
    return inter, u.unit + u.atom_area.astype(np.int64) - inter


def space_bound(mask: UnitMask, space: SearchSpace, params: SearchParams, best: Scored | None
                ) -> Certificate:
    """The certificate of a beam answer ``best``: the root bound, from the atoms' IoUs and
    their subtrees' bounds without any expansion (O(atoms + sets log sets))."""
    u = _Unit.build(mask, space, params)
    inter, union = _unary(u)
    bound = max(float((inter / np.maximum(union, 1)).max(initial=0.0)),
                float(_root_bounds(u).max(initial=0.0)))
    iou = best.iou if best is not None else 0.0
    bound = max(bound, iou)
    return Certificate("beam", bound <= iou, bound, 0)


def optimal_search(mask: UnitMask, space: SearchSpace, params: SearchParams,
                   start: Scored | None = None, budget: Budget | None = None) -> OptimalResult:
    """The first formula of the space in the beam's order (module docstring), with its
    certificate; ``start`` (the beam's answer) is the first incumbent.

    ``visited`` counts the children scored exactly (as the beam's), ``expanded`` the nodes
    whose children were all scored at once.
    """
    t0 = time.perf_counter()
    budget = budget or Budget()
    u = _Unit.build(mask, space, params)
    deadline = t0 + budget.seconds if budget.seconds is not None else float("inf")
    state = _State(best=start, deadline=deadline, nodes=budget.nodes)
    inter, union = _unary(u)
    if not (inter > 0).any():
        return OptimalResult(None, Certificate("optimal", True, 0.0, 0, 0,
                                               time.perf_counter() - t0, start))
    _offer_arrays(state, u, inter, union, [((c,), (-1,)) for c in range(inter.size)])
    if params.length > 1:
        _descend(u, state, [(None, -1, c) for c in range(inter.size)], _root_bounds(u))
    best = state.best
    iou = best.iou if best is not None else 0.0
    bound = max([iou, *state.left])
    return OptimalResult(best, Certificate(
        "optimal", not state.left or bound <= iou, bound, state.visited, state.expanded,
        time.perf_counter() - t0, start))
