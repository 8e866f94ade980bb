"""The dense-mask beam search oracle (benchmarks/dense_oracle.py) on hand-checked cases."""

from __future__ import annotations

import ast
import importlib.util
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_dissect.explain import formula as fm
from ray_dissect.explain.formula import And, Leaf, Not, Or

ORACLE_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "dense_oracle.py"


def _load_oracle():
    if "dense_oracle" in sys.modules:
        return sys.modules["dense_oracle"]
    spec = importlib.util.spec_from_file_location("dense_oracle", ORACLE_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dense_oracle"] = module
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()
search = oracle.dense_beam_search


def _mask(*pixels: tuple[int, int]) -> np.ndarray:
    """A (2 images x 8 pixels) mask with the given (image, pixel) positions set."""
    m = np.zeros((2, 8), dtype=bool)
    for i, p in pixels:
        m[i, p] = True
    return m


# A: image 0 pixels 0-3; B: image 0 pixels 4-5 and image 1 pixels 0-1 (disjoint from A);
# C: image 1 pixels 6-7 (disjoint from both).
A = _mask((0, 0), (0, 1), (0, 2), (0, 3))
B = _mask((0, 4), (0, 5), (1, 0), (1, 1))
C = _mask((1, 6), (1, 7))
EMPTY = np.zeros((2, 8), dtype=bool)


def _ious(result):
    return [Fraction(i, u) if u else Fraction(0) for _f, i, u in result]


def _check_counts(unit, concepts, result):
    for f, inter, union in result:
        mask = fm.evaluate(f, lambda c: concepts[c])
        assert (inter, union) == (int((unit & mask).sum()), int((unit | mask).sum()))


# ---- helpers ---------------------------------------------------------------------------------


def test_order_key_prefix_form():
    f = Or(And(Leaf(3), Not(Leaf(5))), Leaf(7))
    assert oracle.order_key(f) == "O(A(L3,N(L5)),L7)"
    assert oracle.order_key(Leaf(12)) == "L12"


def test_dense_iou_and_iou():
    assert oracle.dense_iou(A | B, A) == (4, 8)
    assert oracle.dense_iou(A, C) == (0, 6)
    assert oracle.dense_iou(EMPTY, EMPTY) == (0, 0)
    assert oracle.iou(0, 0) == 0.0
    assert oracle.iou(4, 8) == 0.5
    with pytest.raises(ValueError):
        oracle.dense_iou(A, np.zeros(16, dtype=bool))


def test_rank_key_exact_ties_then_length_then_string():
    # 2/4 and 3/6 are the same ratio: the shorter formula wins, then the smaller order key.
    items = [(Or(Leaf(1), Leaf(2)), 2, 4), (Leaf(9), 3, 6), (Leaf(10), 1, 2), (Leaf(4), 1, 3)]
    ranked = sorted(items, key=oracle.rank_key)
    assert [oracle.order_key(f) for f, *_ in ranked] == ["L10", "L9", "O(L1,L2)", "L4"]
    # 0/0 counts as IoU 0, equal to 0/5.
    assert oracle.rank_key((Leaf(1), 0, 0))[0] == oracle.rank_key((Leaf(1), 0, 5))[0]


def test_imports_only_the_formula_module():
    tree = ast.parse(ORACLE_PATH.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:  # `from pkg import module` imports pkg.module
                name = f"{node.module}.{a.name}"
                is_module = _is_module(name)
                modules.add(name if is_module else node.module or "")
    ours = {m for m in modules if m.startswith("ray_dissect")}
    assert ours == {"ray_dissect.explain.formula"}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# ---- hand-checked searches -------------------------------------------------------------------


def test_or_wins_for_union_unit():
    # unit = A | B (8 px). IoU: A 4/8, B 4/8, C 0/10 (C never enters the first beam).
    # Round 1 from A: A|B 8/8, A&B 0/8, A&~B 4/8, A|C 4/10, A&C 0/4, A&~C 4/8; symmetric from B.
    unit = A | B
    concepts = {1: A, 2: B, 3: C}
    result = search(unit, concepts, length=2, beam=1)
    assert result == [(Or(Leaf(1), Leaf(2)), 8, 8)]


def test_and_not_wins_for_difference_unit():
    # A2 = all of image 0; B2 = image 0 pixels 5-7 and image 1 pixels 0-1; unit = A2 - B2.
    a2 = _mask(*[(0, p) for p in range(8)])
    b2 = _mask((0, 5), (0, 6), (0, 7), (1, 0), (1, 1))
    unit = a2 & ~b2  # image 0 pixels 0-4: 5 px
    concepts = {1: a2, 2: b2}
    # IoU: a2 5/8, b2 0/10 -> only a2 in the first beam, but b2 is still an atom to extend with.
    # Candidates: a2|b2 5/10, a2&b2 0/8, a2&~b2 5/5.
    result = search(unit, concepts, length=2, beam=3)
    assert result == [
        (And(Leaf(1), Not(Leaf(2))), 5, 5),
        (Leaf(1), 5, 8),
        (Or(Leaf(1), Leaf(2)), 5, 10),
    ]


def test_count_not_excludes_and_not_at_length_two():
    a2 = _mask(*[(0, p) for p in range(8)])
    b2 = _mask((0, 5), (0, 6), (0, 7), (1, 0), (1, 1))
    unit = a2 & ~b2
    concepts = {1: a2, 2: b2}
    # With count_not, a2 AND NOT b2 has length 3 > 2: the best left is a2 itself (5/8).
    result = search(unit, concepts, length=2, beam=5, count_not=True)
    assert result[0] == (Leaf(1), 5, 8)
    assert all(fm.length(f, count_not=True) <= 2 for f, *_ in result)
    assert not any(isinstance(f, And) and isinstance(f.right, Not) for f, *_ in result)
    # At length 3 it is allowed again (reached in the first of the two rounds).
    result3 = search(unit, concepts, length=3, beam=1, count_not=True)
    assert result3 == [(And(Leaf(1), Not(Leaf(2))), 5, 5)]


def test_empty_concept_never_appears():
    unit = A | B
    concepts = {1: A, 2: B, 3: C, 9: EMPTY}
    for length in (1, 2, 3):
        for count_not in (False, True):
            result = search(unit, concepts, length=length, beam=50, count_not=count_not)
            assert result
            assert all(9 not in fm.leaves(f) for f, *_ in result)
    # A unit overlapping nothing: no atom has IoU > 0.
    assert search(C, {1: A, 2: B}, length=2) == []
    assert search(C, {1: A, 2: B}, length=1) == []
    assert search(EMPTY, {1: A, 9: EMPTY}, length=3) == []


@pytest.mark.parametrize("beam", [1, 2, 5])
def test_beam_size_is_honoured(beam):
    unit = A | _mask((1, 6))
    concepts = {1: A, 2: B, 3: C, 4: _mask((0, 0), (1, 6))}
    for length in (2, 3):
        result = search(unit, concepts, length=length, beam=beam, first_beam=4)
        assert len(result) == beam
        ious = _ious(result)
        assert ious == sorted(ious, reverse=True)
        _check_counts(unit, concepts, result)
    # With a fixed first beam and one round the pool does not depend on `beam`: prefixes agree.
    full = search(unit, concepts, length=2, beam=5, first_beam=4)
    assert search(unit, concepts, length=2, beam=beam, first_beam=4) == full[:beam]


def test_first_beam_defaults_to_twice_beam():
    unit = A | B
    concepts = {1: A, 2: B, 3: C}
    assert search(unit, concepts, length=2, beam=1) == search(
        unit, concepts, length=2, beam=1, first_beam=2)
    # first_beam=1 keeps only atom 1 (tie 4/8 with atom 2, "L1" < "L2"): A|B is still found,
    # but B|A can never be built.
    result = search(unit, concepts, length=2, beam=5, first_beam=1, dedup="string")
    assert result[0] == (Or(Leaf(1), Leaf(2)), 8, 8)
    assert all(fm.leaves(f)[0] == 1 for f, *_ in result)


def test_equivalent_candidates_deduplicated():
    # A|B (from beam formula A) and B|A (from beam formula B) are logically equal.
    unit = A | B
    concepts = {1: A, 2: B, 3: C}
    eq = search(unit, concepts, length=2, beam=2, dedup="equivalence")
    assert eq == [(Or(Leaf(1), Leaf(2)), 8, 8), (Leaf(1), 4, 8)]
    st_ = search(unit, concepts, length=2, beam=2, dedup="string")
    assert st_ == [(Or(Leaf(1), Leaf(2)), 8, 8), (Or(Leaf(2), Leaf(1)), 8, 8)]
    # Larger beam: each equivalence class appears once.
    big = search(unit, concepts, length=3, beam=40)
    keys = [fm.canonical_key(f) for f, *_ in big]
    assert len(keys) == len(set(keys))
    big_s = search(unit, concepts, length=3, beam=40, dedup="string")
    keys_s = [fm.canonical_key(f) for f, *_ in big_s]
    assert len(keys_s) > len(set(keys_s))


def test_length_one_returns_best_unaries():
    unit = A | _mask((0, 4))  # 5 px
    concepts = {1: A, 2: B, 3: C, 4: _mask((0, 4), (1, 7)), 5: EMPTY}
    # IoU: A 4/5, B 1/8, C 0/7 (excluded), concept 4: 1/6.
    result = search(unit, concepts, length=1, beam=5)
    assert result == [(Leaf(1), 4, 5), (Leaf(4), 1, 6), (Leaf(2), 1, 8)]
    assert search(unit, concepts, length=1, beam=2) == result[:2]
    # first_beam plays no role at length 1.
    assert search(unit, concepts, length=1, beam=2, first_beam=1) == result[:2]


def test_ties_broken_by_string_order_key():
    # Concepts 2 and 10 have the same mask: equal IoU and length, "L10" < "L2".
    unit = A
    result = search(unit, {2: A, 10: A}, length=1, beam=2)
    assert [f for f, *_ in result] == [Leaf(10), Leaf(2)]


def test_beam_is_kept_in_the_pool():
    # Nothing improves on A for unit = A: the final beam still starts with A.
    result = search(A, {1: A, 2: B, 3: C}, length=3, beam=3)
    assert result[0] == (Leaf(1), 4, 4)
    _check_counts(A, {1: A, 2: B, 3: C}, result)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        search(A, {1: A}, dedup="bogus")
    with pytest.raises(ValueError):
        search(A, {1: np.zeros(16, dtype=bool)})
    with pytest.raises(ValueError):
        search(A, {1: A}, length=0)
    with pytest.raises(ValueError):
        search(A, {1: A}, beam=0)


# ---- invariants on random data ---------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    length=st.integers(1, 3),
    beam=st.integers(1, 4),
    count_not=st.booleans(),
    dedup=st.sampled_from(["equivalence", "string"]),
)
def test_invariants(seed, length, beam, count_not, dedup):
    rng = np.random.default_rng(seed)
    concepts = {c: rng.random((2, 6)) < 0.3 for c in range(4)}
    unit = rng.random((2, 6)) < 0.4
    result = search(unit, concepts, length=length, beam=beam, count_not=count_not, dedup=dedup)
    assert len(result) <= beam
    _check_counts(unit, concepts, result)
    assert [oracle.rank_key(s) for s in result] == sorted(oracle.rank_key(s) for s in result)
    for f, _i, _u in result:
        assert fm.length(f, count_not=count_not) <= length
        assert all(concepts[c].any() for c in fm.leaves(f))
        assert len(set(fm.leaves(f))) == len(fm.leaves(f))
    keys = [fm.canonical_key(f) if dedup == "equivalence" else repr(f) for f, *_ in result]
    assert len(keys) == len(set(keys))
    if any((unit & m).any() for m in concepts.values()):
        # The best formula is at least as good as the best atom.
        best_atom = max(Fraction(int((unit & m).sum()), int((unit | m).sum()))
                        for m in concepts.values() if m.any())
        assert _ious(result)[0] >= best_atom
    else:
        assert result == []
