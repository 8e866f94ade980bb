"""The optimal search returns the first formula of the whole space, found by an exhaustive
dense enumerator (every left-deep formula, pixel masks), and its bounds are admissible."""

from __future__ import annotations

import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.fake_dataset import FakeDataset, index_of
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_dissect.concepts.jit import KERNEL_ENV
from ray_dissect.concepts.masks import unit_masks
from ray_dissect.explain.bounds import Batch, Unit, top_sums, top_sums_rows
from ray_dissect.explain.formula import And, Formula, Leaf, Not, Or, length
from ray_dissect.explain.optimal import (
    Budget,
    _expand,
    _floor,
    _profit_keep,
    _root_bounds,
    _root_keep,
    _State,
    optimal_search,
    space_bound,
)
from ray_dissect.explain.pairs import last_step_bounds, last_step_reach
from ray_dissect.explain.search import Scored, SearchParams, SearchSpace, beam_search

_PATH = Path(__file__).parents[3] / "benchmarks" / "dense_oracle.py"
_spec = importlib.util.spec_from_file_location("dense_oracle", _PATH)
oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("dense_oracle", oracle)
_spec.loader.exec_module(oracle)


def _fixture(seed: int, n_labels: int = 7, n: int = 14, quantile: float = 0.7,
             hi: float = np.inf):
    """A random dataset (whole-image labels, duplicates), its space, a unit mask in
    (lo, hi) and the dense masks: unit (N, S) bool, concept c -> (N, S) bool."""
    ds = FakeDataset(n, n_labels, seed, shape=(4, 4))
    index, shards = index_of(ds, n_labels, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    rng = np.random.default_rng(seed + 100)
    acts = rng.normal(size=(n, 1, 2, 2)).astype(np.float32)
    lo = float(np.quantile(acts, quantile))
    (mask,) = unit_masks(acts, np.array([lo]), np.array([hi]), ids, 0, index.valid)
    up = F.interpolate(torch.from_numpy(acts), size=(4, 4), mode="bilinear",
                       align_corners=False).numpy()[:, 0].reshape(n, -1)
    dense_b = (up > lo) & (up < hi)
    dense = ds.dense(n_labels)
    concepts = {c: dense[c] for c in range(1, n_labels) if dense[c].any()}
    return SearchSpace.from_index(index), mask, dense_b, concepts


def enumerate_space(unit: np.ndarray, concepts: dict[int, np.ndarray], max_len: int,
                    count_not: bool = False):
    """Yield (formula, inter, union) for every left-deep formula of distinct atoms."""
    def grow(f: Formula, m: np.ndarray, used: tuple[int, ...], size: int):
        inter = int((m & unit).sum())
        yield f, inter, int(unit.sum() + m.sum()) - inter
        for c, t in concepts.items():
            if c in used:
                continue
            for node, mm, g in ((Or(f, Leaf(c)), m | t, 1), (And(f, Leaf(c)), m & t, 1),
                                (And(f, Not(Leaf(c))), m & ~t, 1 + int(count_not))):
                if size + g <= max_len:
                    yield from grow(node, mm, (*used, c), size + g)

    for c, t in concepts.items():
        yield from grow(Leaf(c), t, (c,), 1)


def exhaustive_first(unit, concepts, max_len, count_not=False):
    """The first formula of the space in the beam's order; None when no atom has a hit."""
    if not any((t & unit).any() for t in concepts.values()):
        return None
    return min(enumerate_space(unit, concepts, max_len, count_not), key=oracle.rank_key)


def _check(space, mask, dense_b, concepts, params):
    start = beam_search(mask, space, params).beam
    res = optimal_search(mask, space, params, start[0] if start else None)
    want = exhaustive_first(dense_b, concepts, params.length, params.count_not)
    cert = res.certificate
    assert cert.optimal and cert.search == "optimal"
    if want is None:
        assert res.best is None and cert.upper_bound == 0.0
        return res
    assert (res.best.formula, res.best.inter, res.best.union) == want
    assert cert.upper_bound == pytest.approx(res.best.iou)
    return res


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize(("max_len", "count_not"), [(3, False), (2, False), (3, True)])
def test_random_maps_match_exhaustive(seed: int, max_len: int, count_not: bool) -> None:
    """Random maps with whole-image labels, duplicate labels and empty concepts."""
    space, mask, dense_b, concepts = _fixture(seed)
    _check(space, mask, dense_b, concepts, SearchParams(length=max_len, count_not=count_not))


@pytest.mark.parametrize("seed", range(12))
def test_ranges_match_exhaustive(seed: int) -> None:
    """A clustered range (lo, hi) with a finite upper end."""
    space, mask, dense_b, concepts = _fixture(seed, quantile=0.4, hi=0.6)
    _check(space, mask, dense_b, concepts, SearchParams(length=3))


def test_ties_resolved_by_the_beams_order() -> None:
    """Few labels on few pixels: the best IoU is often shared (symmetric forms, absorbed
    atoms); the search returns the exhaustive first one every time."""
    tied = 0
    for seed in range(12):
        space, mask, dense_b, concepts = _fixture(seed, n_labels=5, n=6)
        scored = list(enumerate_space(dense_b, concepts, 3))
        best = min(scored, key=oracle.rank_key)
        top = Fraction(best[1], best[2])
        tied += sum(u > 0 and Fraction(i, u) == top for _, i, u in scored) >= 2
        _check(space, mask, dense_b, concepts, SearchParams(length=3))
    assert tied >= 3  # the fixture does exercise ties


def _planted(seed: int):
    """A unit mask equal to (a OR b) AND NOT c on a random map: the optimum has IoU 1."""
    space, _, _, concepts = _fixture(seed, n_labels=8, n=20)
    keys = sorted(concepts)
    a, b, c = keys[0], keys[1], keys[2]
    truth = (concepts[a] | concepts[b]) & ~concepts[c]
    return space, truth, concepts


@pytest.mark.parametrize("seed", range(8))
def test_planted_formula_is_found(seed: int) -> None:
    """The planted mask's optimum has IoU 1 and the search proves it."""
    space, truth, concepts = _planted(seed)
    if not truth.any():
        pytest.skip("empty planted mask")
    n = truth.shape[0]
    images, pix = np.nonzero(truth)
    ds = FakeDataset(20, 8, seed, shape=(4, 4))
    index, shards = index_of(ds, 8, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0).reshape(n, -1)
    sets = ids[images, pix]
    key = images.astype(np.int64) * (ids.max() + 1) + sets
    uniq, counts = np.unique(key, return_counts=True)
    from ray_dissect.concepts.masks import UnitMask
    mask = UnitMask((uniq // (ids.max() + 1)).astype(np.int32),
                    (uniq % (ids.max() + 1)).astype(np.int32), counts.astype(np.int32))
    res = _check(space, mask, truth, concepts, SearchParams(length=3))
    assert res.best.iou == 1.0


def test_no_hit_gives_no_formula() -> None:
    """An empty unit mask: no formula, proved (bound 0), as the beam."""
    space, mask, _, _ = _fixture(0)
    empty = type(mask)(mask.images[:0], mask.sets[:0], mask.counts[:0])
    res = optimal_search(empty, space, SearchParams(length=3))
    assert res.best is None and res.certificate.optimal


def test_budget_gives_a_proved_bound() -> None:
    """One expansion only: the answer is the best found, the bound >= the true optimum."""
    space, mask, dense_b, concepts = _fixture(4, n_labels=9, n=20)
    want = exhaustive_first(dense_b, concepts, 3)
    res = optimal_search(mask, space, SearchParams(length=3), None, Budget(nodes=1))
    assert res.certificate.expanded == 1
    assert res.certificate.upper_bound >= float(Fraction(want[1], want[2])) - 1e-12
    assert res.best.iou <= float(Fraction(want[1], want[2])) + 1e-12


@pytest.mark.parametrize("seed", range(10))
def test_beam_certificate_bounds_the_optimum(seed: int) -> None:
    """The beam's root bound is never below the space's maximum IoU."""
    space, mask, dense_b, concepts = _fixture(seed)
    params = SearchParams(length=3)
    beam = beam_search(mask, space, params).beam
    cert = space_bound(mask, space, params, beam[0] if beam else None)
    want = exhaustive_first(dense_b, concepts, 3)
    top = float(Fraction(want[1], want[2])) if want else 0.0
    assert cert.upper_bound >= top - 1e-12
    assert cert.optimal == (cert.upper_bound <= (beam[0].iou if beam else 0.0))
    assert length(want[0]) >= 1 if want else True


def _descendant_max(unit, concepts, f, m, used, size, max_len):
    """Largest IoU (Fraction) of the strict descendants of the formula with mask ``m``."""
    best = Fraction(-1)
    for c, t in concepts.items():
        if c in used or size + 1 > max_len:
            continue
        for mm in (m | t, m & t, m & ~t):
            inter = int((mm & unit).sum())
            union = int(unit.sum() + mm.sum()) - inter
            best = max(best, Fraction(inter, union) if union else Fraction(0),
                       _descendant_max(unit, concepts, None, mm, (*used, c), size + 1, max_len))
    return best


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), max_len=st.sampled_from([2, 3]))
def test_bounds_are_admissible(seed: int, max_len: int) -> None:
    """Every partial formula's bound (roots, then every child of every root, valid or not)
    is >= the best IoU among its descendants: about 190 partial formulas per example."""
    space, mask, dense_b, concepts = _fixture(seed, n_labels=8, n=12)
    params = SearchParams(length=max_len)
    u = Unit.build(mask, space, params)
    atoms = [int(a) for a in space.atoms]
    roots = _root_bounds(u.curve, u.atom_inter, u.atom_area, max_len)
    for col, a in enumerate(atoms):
        want = _descendant_max(dense_b, concepts, None, concepts[a], (a,), 1, max_len)
        assert roots[col] >= float(want) - 1e-12
    if max_len < 3:
        return
    nodes = u.roots()
    f = u.members(nodes)
    hits, pix = u.children(nodes, f)
    node, op, col = np.nonzero(np.ones_like(hits, dtype=bool))
    keep = col != node
    node, op, col = node[keep], op[keep], col[keep]
    bound = u.child_bounds(nodes, f, hits, pix, (node, op, col))
    for k, o, c, b in zip(node, op, col, bound, strict=True):
        base, t = concepts[atoms[k]], concepts[atoms[c]]
        m = (base | t, base & t, base & ~t)[o]
        want = _descendant_max(dense_b, concepts, None, m, (atoms[k], atoms[c]), 2, max_len)
        assert b >= float(want) - 1e-12


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), pick=st.integers(0, 2**31 - 1))
def test_own_miss_curve_bounds_every_subset(seed: int, pick: int) -> None:
    """A node's own miss curve: every subset of its label sets with at most x hits has an
    IoU <= g_node(min(x, peak)) (the bound of AND / AND NOT completions)."""
    space, mask, _, _ = _fixture(seed, n_labels=8, n=12)
    u = Unit.build(mask, space, SearchParams(length=3))
    nodes = u.roots()
    f = u.members(nodes)
    hits, misses, peak = u.subset_curves(f)
    dense = f.toarray().T > 0
    rng = np.random.default_rng(pick)
    for k in range(dense.shape[0]):
        sets = np.flatnonzero(dense[k])
        for _ in range(20):
            sub = sets[rng.random(sets.size) < rng.random()]
            inter = float(u.h[sub].sum())
            miss = float(space.set_counts[sub].sum()) - inter
            x = min(inter, peak[k])
            bound = x / (u.unit + np.interp(x, hits[k], misses[k])) if u.unit else 0.0
            assert inter / (u.unit + miss) <= bound + 1e-12


def _last_step_case(seed: int, pick: int, n_nodes: int = 60):
    """A random map's unit, its dense masks, and ``n_nodes`` random one- or two-atom nodes
    (atoms, ops, exact counts) with the exact IoU of each child ``C op u``: (k, 3, A)."""
    space, mask, dense_b, concepts = _fixture(seed, n_labels=9, n=12)
    u = Unit.build(mask, space, SearchParams(length=3))
    atoms = [int(a) for a in space.atoms]
    rng = np.random.default_rng(pick)
    n = len(atoms)
    a, b = rng.integers(0, n, n_nodes), rng.integers(0, n, n_nodes)
    b = np.where(a == b, (b + 1) % n, b)
    op = rng.integers(0, 3, n_nodes)
    pairs = [(concepts[atoms[i]], concepts[atoms[j]]) for i, j in zip(a, b, strict=True)]
    masks = [(x | y, x & y, x & ~y)[o] for (x, y), o in zip(pairs, op, strict=True)]
    inter = np.array([(m & dense_b).sum() for m in masks], dtype=np.float64)
    area = np.array([m.sum() for m in masks], dtype=np.float64)
    node = Batch(np.stack([a, b], 1), np.stack([np.full(a.size, -1), op], 1), inter, area,
                 np.full(a.size, 2))
    unit = int(dense_b.sum())
    exact = np.zeros((a.size, 3, n))
    for k, m in enumerate(masks):
        for c, atom in enumerate(atoms):
            t = concepts[atom]
            for o, mm in enumerate((m | t, m & t, m & ~t)):
                i = int((mm & dense_b).sum())
                exact[k, o, c] = i / (unit + int(mm.sum()) - i) if unit else 0.0
    return u, node, exact, concepts, atoms, dense_b


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), pick=st.integers(0, 2**31 - 1))
def test_pairwise_last_step_bounds_are_admissible(seed: int, pick: int) -> None:
    """Each child ``C op u`` of a one- or two-atom node C is bounded by the pairwise bound
    (every atom, every op; about 1,600 children per example), exactly for one-atom nodes."""
    u, node, exact, concepts, atoms, dense_b = _last_step_case(seed, pick)
    bound = last_step_bounds(u.pairs, node.cols, node.ops, node.inter, node.area)
    assert (bound >= exact - 1e-12).all()
    first = node.cols[:, 0]
    one = last_step_bounds(u.pairs, node.cols[:, :1], node.ops[:, :1], u.atom_inter[first],
                           u.atom_area[first])
    for k, a in enumerate(node.cols[:, 0]):
        for c, atom in enumerate(atoms):
            t, base = concepts[atom], concepts[atoms[a]]
            for o, mm in enumerate((base | t, base & t, base & ~t)):
                i = int((mm & dense_b).sum())
                want = i / (int(dense_b.sum()) + int(mm.sum()) - i) if dense_b.any() else 0.0
                assert one[k, o, c] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pick=st.integers(0, 2**31 - 1),
       level=st.floats(0.5, 1.0), at=st.integers(0, 59))
def test_last_step_reach_finds_every_child_above_the_floor(kernels: str, seed: int, pick: int,
                                                           level: float, at: int) -> None:
    """A node with an allowed child (in the space, kept by rule 2) whose exact IoU is >= the
    floor is always marked (admissible), with and without the profit test's gate; both
    kernels mark the same nodes. The floor is at
    or below one node's best allowed child, so some nodes sit on the edge."""
    u, node, exact, _, _, _ = _last_step_case(seed, pick)
    allowed = u.structural(node)
    floor = level * float(np.where(allowed, exact, 0.0)[at].max())
    prof = u.profits(floor)
    gates = [None] + ([] if prof is None else
                      [prof.gate(node.cols, node.ops, node.inter, node.area)])
    want = ((exact >= floor) & allowed).any(axis=(1, 2))
    for gate in gates:
        found = {}
        for name in (kernels, "numpy" if kernels == "numba" else "numba"):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(KERNEL_ENV, name)
                found[name] = last_step_reach(u.pairs, node.cols, node.ops, node.inter,
                                              node.area, floor, u.rank, True, gate)
        reach, other = found[kernels], found["numpy" if kernels == "numba" else "numba"]
        assert (reach | ~want).all()
        assert (reach == other).all()


@pytest.mark.parametrize("seed", range(8))
def test_numpy_kernels_match_exhaustive(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy reference of the neighbour scan gives the exhaustive first formula too."""
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    space, mask, dense_b, concepts = _fixture(seed, n_labels=9, n=16)
    _check(space, mask, dense_b, concepts, SearchParams(length=3))


def test_atom_tables_are_built_once_per_space() -> None:
    """Units of one space share its atom tables; another space (same data) gets its own."""
    space, mask, _, _ = _fixture(3)
    first = Unit.build(mask, space, SearchParams(length=3))
    again = Unit.build(mask, space, SearchParams(length=3))
    assert first.atom_sets is again.atom_sets and first.pairs.neighbors is again.pairs.neighbors
    other, _, _, _ = _fixture(3)
    third = Unit.build(mask, other, SearchParams(length=3))
    assert third.atom_sets is not first.atom_sets
    assert (third.atom_sets != first.atom_sets).nnz == 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), max_len=st.sampled_from([2, 3, 4]),
       count_not=st.booleans(), pick=st.integers(0, 2**31 - 1), level=st.sampled_from(
           [1.0, 1.0, 0.999, 0.9, 0.5]))
def test_profit_test_drops_only_subtrees_below_the_floor(seed: int, max_len: int,
                                                         count_not: bool, pick: int,
                                                         level: float) -> None:
    """A root or a child of a root dropped by the profit test (:mod:`ray_dissect.explain.
    profit`) has no descendant (every formula of its atoms and up to the length's atoms more,
    by dense masks) with an IoU at or above the floor, and a last-step child whose subsets
    are not marked has no AND / AND NOT completion there; the incumbent is set at (or below)
    one node's true best descendant, so nodes sit on the edge. About 190 nodes per example."""
    space, mask, dense_b, concepts = _fixture(seed, n_labels=8, n=12)
    u = Unit.build(mask, space, SearchParams(length=max_len, count_not=count_not))
    atoms = [int(a) for a in space.atoms]
    nodes = u.roots()
    f = u.members(nodes)
    hits, pix = u.children(nodes, f)
    node, op, col = np.nonzero(np.ones_like(hits, dtype=bool))
    grow = np.where((op == 2) & count_not, 2, 1)
    keep = (col != node) & (1 + grow < max_len)
    node, op, col, grow = node[keep], op[keep], col[keep], grow[keep]
    want_root = [_descendant_max(dense_b, concepts, None, concepts[a], (a,), 1, max_len)
                 for a in atoms]
    want_kid = []
    for k, o, c, g in zip(node, op, col, grow, strict=True):
        base, t = concepts[atoms[k]], concepts[atoms[c]]
        m = (base | t, base & t, base & ~t)[o]
        want_kid.append(_descendant_max(dense_b, concepts, None, m, (atoms[k], atoms[c]),
                                        1 + int(g), max_len))
    wants = [w for w in want_root + want_kid if w > 0]
    if not wants:
        return
    target = wants[np.random.default_rng(pick).integers(len(wants))] * Fraction(level)
    state = _State(best=Scored(Leaf(atoms[0]), target.numerator, target.denominator))
    floor = _floor(state)
    roots = _root_keep(u, state, nodes)
    kids, subsets = _profit_keep(u, state, nodes, f, (node, op, col, grow), hits, pix)
    for kept, want in zip([*roots, *kids], want_root + want_kid, strict=True):
        assert kept or float(want) < floor
    unit = int(dense_b.sum())
    for k, o, c, g, sub in zip(node, op, col, grow, subsets, strict=True):
        if sub or 1 + g + 1 < max_len:  # marked, or more than one unit left: all kept
            assert sub
            continue
        base, t = concepts[atoms[k]], concepts[atoms[c]]
        m = (base | t, base & t, base & ~t)[o]
        for v in concepts.values():  # the AND / AND NOT completions: subsets of the child
            for mm in (m & v, m & ~v):
                i = int((mm & dense_b).sum())
                assert i == 0 or i / (unit + int(mm.sum()) - i) < floor


@pytest.mark.parametrize("seed", range(6))
def test_expansion_with_every_child_dropped_returns_nothing(seed: int) -> None:
    """An incumbent of IoU 1 above every formula of the space (exhaustive): the profit test
    drops every child of the roots and the expansion leaves no node to search."""
    space, mask, dense_b, concepts = _fixture(seed, n_labels=8, n=12)
    best = max(Fraction(i, n) for _, i, n in enumerate_space(dense_b, concepts, 3) if n)
    assert best < 1
    u = Unit.build(mask, space, SearchParams(length=3))
    state = _State(best=Scored(Leaf(int(space.atoms[0])), 7, 7))
    assert not _root_keep(u, state, u.roots()).any()
    assert _expand(u, state, u.roots()) is None


@pytest.mark.parametrize("r", [1, 2, 3, 9])
def test_top_sums_rows_equal_top_sums_of_each_row(r: int) -> None:
    """The row-wise sums (a max for r = 1, a partition otherwise) are :func:`top_sums` of each
    row, ties and rows shorter than r included."""
    rng = np.random.default_rng(r)
    gains = rng.integers(-3, 4, size=(40, 6)).astype(np.float64)
    got = top_sums_rows(gains, r)
    for row, sums in zip(gains, got, strict=True):
        assert (sums == top_sums(row, r)).all()
