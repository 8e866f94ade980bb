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

**The search.** Branch and bound over the nodes (partial formulas), the beam's answer as
the first incumbent. Nodes of one depth are expanded in chunks, most promising (largest bound)
first and each chunk's children depth first: a chunk's children, every atom under every op,
are scored exactly at once by two sparse products (:mod:`ray_dissect.explain.bounds`), as
the beam does for its beam. Each child that can still grow gets an admissible upper bound of
its subtree (:mod:`ray_dissect.explain.bounds`) and is dropped when it is below the
incumbent's IoU. Nodes whose children are all final (one length unit left: most of the
work) are first tested by the pairwise bounds of :mod:`ray_dissect.explain.pairs`: a node
none of whose children can reach the incumbent is not expanded, and an expanded one is scored
only for the atoms whose bound reaches it. A ``budget`` (seconds and/or expanded nodes)
makes it anytime: the proved bound is then the largest bound of the subtrees left.

**Pruning rules, and why each keeps the answer.** Each rule drops a formula G (with its
whole subtree) only when, for G and for every descendant of G, the space holds a formula with
the same IoU (the same label sets up to sets without pixels, which no count sees) and fewer
leaves, or the same leaves and a smaller ``order_key``: a strictly earlier formula in the
beam's order. So the answer, the first formula of the space, is never dropped, nor is any of
its prefixes (a dropped prefix would drop it).

1. *Bounds*: a subtree whose bound is below the incumbent's IoU holds nothing as good as the
   incumbent (admissibility; equal bounds are kept so ties are resolved by the rule). The
   profit test of :mod:`ray_dissect.explain.profit`, at the floor (just below the
   incumbent's IoU), drops roots and children whose every descendant is below the floor.
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
from ray_dissect.explain.bounds import AND_NOT, Batch, MissCurve, Unit, subtree_bound, top_sums
from ray_dissect.explain.formula import And, Formula, Leaf, Not, Or
from ray_dissect.explain.pairs import last_step_bounds, last_step_reach
from ray_dissect.explain.search import Scored, SearchParams, SearchSpace, _sort_key

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
class _State:
    """The incumbent and the counters of one search."""

    best: Scored | None
    visited: int = 0
    expanded: int = 0
    deadline: float = float("inf")
    nodes: int | None = None
    left: list[float] = field(default_factory=list)  # bounds of subtrees left by the budget

    def room(self, chunk: int) -> int:
        """How many nodes the next expansion may take: ``chunk``, or the node budget left."""
        return chunk if self.nodes is None else max(1, min(chunk, self.nodes - self.expanded))

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


def _offer_batch(state: _State, u: Unit, b: Batch, idx: tuple[np.ndarray, ...],
                 inter: np.ndarray, union: np.ndarray) -> None:
    """Offer the children ``idx`` (node, op, atom) of ``b`` with counts (n,) int64
    ``inter``/``union`` whose IoU reaches the incumbent's; float IoU narrows a long list."""
    sel = np.flatnonzero(_iou_ge(inter, union, state.best))
    if sel.size > 32:
        score = inter[sel] / np.maximum(union[sel], 1)
        sel = sel[score >= score.max() * (1 - 1e-9)]
    node, op, col = idx
    cands = []
    for i in sel:
        k = int(node[i])
        grown = int(op[i]) >= 0  # op -1: the node itself
        cols = (*b.cols[k].tolist(), *([int(col[i])] if grown else []))
        ops = (*b.ops[k].tolist(), *([int(op[i])] if grown else []))
        cands.append(Scored(to_formula(cols, ops, u.space.atoms), int(inter[i]),
                            int(union[i])))
    if cands:
        _offer(state, cands)


def _floor(state: _State) -> float:
    """The least bound a subtree needs to be searched (pruning rule 1): the incumbent's IoU
    less a rounding margin, so subtrees bounded exactly at it are kept (ties)."""
    return -1.0 if state.best is None else state.best.iou * (1 - 1e-9) - MARGIN


def _expand(u: Unit, state: _State, b: Batch) -> tuple[Batch, np.ndarray] | None:
    """Score every child of the nodes of ``b`` exactly; the children that can grow further,
    with their bounds (None when none can)."""
    state.expanded += b.cols.shape[0]
    if _last_step(u, b):
        _score_last(u, state, b)
        return None
    f = u.members(b)
    hits, pix = u.children(b, f)
    idx = np.nonzero(u.valid(b, pix))
    state.visited += idx[0].size
    flat = np.ravel_multi_index(idx, hits.shape)
    inter, area = hits.ravel()[flat].astype(np.int64), pix.ravel()[flat].astype(np.int64)
    _offer_batch(state, u, b, idx, inter, u.unit + area - inter)
    node, op, col = idx
    grow = np.where((op == AND_NOT) & u.params.count_not, 2, 1)
    deeper = b.size[node] + grow < u.params.length
    if not deeper.any():
        return None
    if not deeper.all():
        node, op, col, grow = node[deeper], op[deeper], col[deeper], grow[deeper]
    keep, subsets = _profit_keep(u, state, b, f, (node, op, col, grow), hits, pix)
    if not keep.any():
        return None
    node, op, col, grow = node[keep], op[keep], col[keep], grow[keep]
    bound = u.child_bounds(b, f, hits, pix, (node, op, col), subsets[keep])
    keep = bound >= _floor(state)
    node, op, col, grow, bound = node[keep], op[keep], col[keep], grow[keep], bound[keep]
    kids = Batch(np.concatenate([b.cols[node], col[:, None]], axis=1),
                 np.concatenate([b.ops[node], op[:, None]], axis=1),
                 hits[node, op, col], pix[node, op, col], b.size[node] + grow)
    return kids, bound


def _profit_keep(u: Unit, state: _State, b: Batch, f: sp.csc_matrix,
                 idx: tuple[np.ndarray, ...], hits: np.ndarray, pix: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(n,) bool each: the children ``idx`` (node, op, atom, length units added) of ``b``
    (members ``f``, counts (k, 3, A) ``hits``, ``pix``) whose subtree may reach the floor by
    the profit test of :mod:`ray_dissect.explain.profit` (pruning rule 1), and those whose
    subsets may (all that have more than one unit left)."""
    node, op, col, grow = idx
    prof = u.profits(_floor(state))
    if prof is None:
        return np.ones(node.size, dtype=bool), np.ones(node.size, dtype=bool)
    sub = prof.children(prof.of_nodes(f), node, op, col)
    remaining = u.params.length - b.size[node] - grow
    flat = np.ravel_multi_index((node, op, col), hits.shape)
    last = prof.last_reach(sub, hits.ravel()[flat], pix.ravel()[flat])
    final = remaining == 1
    if final.all():  # the usual case (length 3): no subtree test to compute
        return last, sub >= prof.need
    subsets = ~final | (sub >= prof.need)
    return np.where(final, last, prof.subtree_reach(sub, remaining)), subsets


def _root_keep(u: Unit, state: _State, b: Batch) -> np.ndarray:
    """(k,) bool: the one-atom nodes of ``b`` whose subtree may reach the floor by the profit
    test (:mod:`ray_dissect.explain.profit`)."""
    prof = u.profits(_floor(state))
    if prof is None or b.cols.shape[1] != 1:
        return np.ones(b.cols.shape[0], dtype=bool)
    own = prof.atoms[b.cols[:, 0]]
    remaining = u.params.length - b.size
    last = prof.last_reach(own, b.inter, b.area)
    return np.where(remaining == 1, last, prof.subtree_reach(own, np.maximum(remaining, 1)))


def _last_step(u: Unit, b: Batch) -> bool:
    """Whether every child of the nodes of ``b`` is final and the pairwise bounds of
    :mod:`ray_dissect.explain.pairs` apply (nodes of one or two atoms)."""
    return (u.pairs is not None and b.cols.shape[1] <= 2
            and bool((b.size + 1 >= u.params.length).all()))


def _last_bounds(u: Unit, b: Batch) -> np.ndarray:
    """(k, 3, A) float64 pairwise bounds of the children of ``b`` (:func:`_last_step`), 0
    for children outside the space or dropped by pruning rule 2."""
    assert u.pairs is not None
    bound = last_step_bounds(u.pairs, b.cols, b.ops, b.inter, b.area)
    return np.where(u.structural(b), bound, 0.0)


def _score_last(u: Unit, state: _State, b: Batch) -> None:
    """Score exactly the final children of ``b`` whose pairwise bound reaches the incumbent,
    computing only the atom columns where some child does (pruning rule 1)."""
    reach = _last_bounds(u, b) >= _floor(state)
    cols = np.flatnonzero(reach.any(axis=(0, 1)))
    if not cols.size:
        return
    hits, pix = u.children(b, u.members(b), cols)
    node, op, pos = np.nonzero(u.valid(b, pix, cols) & reach[:, :, cols])
    state.visited += node.size
    inter, area = hits[node, op, pos].astype(np.int64), pix[node, op, pos].astype(np.int64)
    _offer_batch(state, u, b, (node, op, cols[pos]), inter, u.unit + area - inter)


def _gate(u: Unit, state: _State, b: Batch
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The profit test's gate of the neighbour scan (``last_step_reach``) for the two-atom
    nodes of ``b`` at the floor: ``F(u)``, ``lam * H - P(C)``, and whether ``F(C)`` (bounded
    from its atoms' profits) reaches ``lam * H``; None when the test proves nothing."""
    prof = u.profits(_floor(state))
    return None if prof is None else prof.gate(b.cols, b.ops, b.inter, b.area)


def _tighten(u: Unit, state: _State, b: Batch, bound: np.ndarray) -> np.ndarray:
    """(k,) float64: ``bound``, or -inf for the two-atom nodes whose final children cannot
    reach the incumbent (:func:`~ray_dissect.explain.pairs.last_step_reach`)."""
    bound = np.where(_root_keep(u, state, b), bound, -np.inf)
    if not _last_step(u, b) or b.cols.shape[1] != 2:
        return bound
    assert u.pairs is not None
    allow_not = not u.params.count_not  # a final AND NOT child counting 2 would not fit
    reach = last_step_reach(u.pairs, b.cols, b.ops, b.inter, b.area, _floor(state), u.rank,
                            allow_not, _gate(u, state, b))
    return np.where(reach, bound, -np.inf)


def _search(u: Unit, state: _State, b: Batch, bound: np.ndarray) -> bool:
    """Expand the nodes of ``b`` in chunks, in descending ``bound`` order, while their bound
    can reach the incumbent, each chunk's children depth first; False when the budget ran
    out (then the largest bound not searched is in ``state.left``)."""
    bound = _tighten(u, state, b, bound)
    order = np.argsort(-bound, kind="stable")
    start = 0
    while start < order.size:
        if bound[order[start]] < _floor(state):
            return True
        if state.out_of_budget():
            state.left.append(float(bound[order[start]]))
            return False
        stop = start + state.room(u.chunk)
        chunk = order[start:stop]
        chunk = chunk[bound[chunk] >= _floor(state)]
        found = _expand(u, state, b.take(chunk))
        if found is not None and found[0].cols.shape[0] and not _search(u, state, *found):
            state.left.extend(bound[order[stop:stop + 1]].tolist())
            return False
        start = stop
    return True


def _root_bounds(curve: MissCurve, inter: np.ndarray, area: np.ndarray, length: int
                 ) -> np.ndarray:
    """(A,) float64 bound of the strict descendants of each atom with ``inter`` hits and
    ``area`` pixels, (A,) float64 each (0 with ``length`` 1)."""
    r = length - 1
    if r < 1:
        return np.zeros(inter.size)
    return subtree_bound(curve, inter, area - inter, np.full(inter.size, r),
                         top_sums(inter, r + 1))


def space_bound(mask: UnitMask, space: SearchSpace, params: SearchParams, best: Scored | None
                ) -> Certificate:
    """The certificate of a beam answer ``best``: the root bound, from the atoms' IoUs and
    their subtrees' bounds without any expansion (one sparse product and a sort of the sets
    with hits, about what the beam's unary pass costs)."""
    n_sets = space.membership_t.shape[1]
    h = np.bincount(mask.sets, weights=mask.counts, minlength=n_sets)
    b_sets = np.flatnonzero(h)
    inter = np.rint(space.membership_t[:, b_sets] @ h[b_sets])[space.atoms]
    area = space.label_area[space.atoms].astype(np.float64)
    curve = MissCurve.build(h, space.set_counts, float(mask.area))
    union = mask.area + area - inter
    bound = max(float((inter / np.maximum(union, 1)).max(initial=0.0)),
                float(_root_bounds(curve, inter, area, params.length).max(initial=0.0)))
    iou = best.iou if best is not None else 0.0
    bound = max(bound, iou)
    return Certificate("beam", bound <= iou, bound, 0)


def optimal_search(mask: UnitMask, space: SearchSpace, params: SearchParams,
                   start: Scored | None = None, budget: Budget | None = None) -> OptimalResult:
    """The first formula of the space in the beam's order (module docstring), with its
    certificate; ``start`` (the beam's answer) is the first incumbent.

    ``visited`` counts the children scored exactly (as the beam's), ``expanded`` the nodes
    whose children were scored (all atoms under all ops at once).
    """
    t0 = time.perf_counter()
    budget = budget or Budget()
    u = Unit.build(mask, space, params)
    deadline = t0 + budget.seconds if budget.seconds is not None else float("inf")
    state = _State(best=start, deadline=deadline, nodes=budget.nodes)
    roots = u.roots()
    inter = roots.inter.astype(np.int64)
    if not (inter > 0).any():
        return OptimalResult(None, Certificate("optimal", True, 0.0, 0, 0,
                                               time.perf_counter() - t0, start))
    n = inter.size
    _offer_batch(state, u, roots, (np.arange(n), np.full(n, -1), np.full(n, -1)),
                 inter, u.unit + roots.area.astype(np.int64) - inter)
    if params.length > 1:
        _search(u, state, roots, _root_bounds(u.curve, u.atom_inter, u.atom_area, params.length))
    best = state.best
    iou = best.iou if best is not None else 0.0
    bound = max([iou, *state.left])
    return OptimalResult(best, Certificate(
        "optimal", not state.left or bound <= iou, bound, state.visited, state.expanded,
        time.perf_counter() - t0, start))
