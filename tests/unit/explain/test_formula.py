"""Formula trees: printer/parser round trips, evaluation, and pyeda equivalence vs truth tables."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ray_dissect.explain.formula import (
    And,
    Formula,
    FormulaError,
    Leaf,
    Not,
    Or,
    canonical_key,
    equivalent,
    evaluate,
    from_dict,
    leaves,
    length,
    parse,
    to_dict,
    to_string,
)

NAMES = ["", "water", "river", "blue", "potted plant", "or", 'a"b', "x-y.z", "back\\slash",
         "NOT", "9lives", "it's"]
A, B, C, D = Leaf(1), Leaf(2), Leaf(3), Leaf(4)

leaf_st = st.integers(0, len(NAMES) - 1).map(Leaf)
formulas = st.recursive(
    leaf_st,
    lambda kids: st.one_of(kids.map(Not), st.builds(And, kids, kids), st.builds(Or, kids, kids)),
    max_leaves=6,
)
# Few distinct concepts, so random pairs are often equivalent and constant formulas occur.
small_formulas = st.recursive(
    st.integers(1, 3).map(Leaf),
    lambda kids: st.one_of(kids.map(Not), st.builds(And, kids, kids), st.builds(Or, kids, kids)),
    max_leaves=6,
)


@pytest.mark.parametrize(("tree", "text"), [
    (And(Or(A, B), Not(C)), "(water OR river) AND NOT blue"),
    (Or(Or(A, B), C), "water OR river OR blue"),
    (Or(A, Or(B, C)), "water OR (river OR blue)"),
    (And(A, And(B, C)), "water AND (river AND blue)"),
    (Not(Or(A, B)), "NOT (water OR river)"),
    (Not(And(A, B)), "NOT (water AND river)"),
    (Not(Not(A)), "NOT NOT water"),
    (Or(And(A, B), C), "water AND river OR blue"),
    (Or(A, And(B, C)), "water OR river AND blue"),
    (And(D, Leaf(5)), '"potted plant" AND "or"'),
    (Or(Leaf(6), Leaf(8)), r'"a\"b" OR "back\\slash"'),
    (And(Leaf(7), Not(Leaf(9))), 'x-y.z AND NOT "NOT"'),
    (Or(Leaf(10), Leaf(11)), "9lives OR it's"),
    (Leaf(0), '""'),
])
def test_printer_and_parser_examples(tree: Formula, text: str) -> None:
    """The printed text is the minimal-parenthesis form and parses back to the same tree."""
    assert to_string(tree, NAMES) == text
    assert parse(text, NAMES) == tree


def test_parse_accepts_lowercase_whitespace_and_redundant_parentheses() -> None:
    """Keywords in any case, free spacing and extra parentheses give the same tree."""
    want = And(Or(A, B), Not(C))
    assert parse("  ( (water or river) )and not(blue) ", NAMES) == want
    assert parse("(water OR river) AND NOT blue", ["", "water", "river", "blue"]) == want


def test_parse_shared_name_takes_lowest_number() -> None:
    """When two concepts share a name, the lowest number wins."""
    assert parse("dup OR x", ["x", "dup", "dup"]) == Or(Leaf(1), Leaf(0))


@settings(max_examples=300, deadline=None)
@given(formulas)
def test_round_trip_random_trees(f: Formula) -> None:
    """parse(to_string(f)) == f, and to_string(parse(s)) == s for printed s."""
    text = to_string(f, NAMES)
    assert parse(text, NAMES) == f
    assert to_string(parse(text, NAMES), NAMES) == text


@pytest.mark.parametrize(("text", "pos"), [
    ("water OR lake", 9),
    ("(water OR river", 15),
    ("water OR river)", 14),
    ("water river", 6),
    ("water AND", 9),
    ("", 0),
    ("   ", 3),
    ("water & river", 6),
    ('"potted plant', 0),
    (r'"a\nb"', 2),
    ("NOT", 3),
    ("()", 1),
])
def test_parse_errors_give_position(text: str, pos: int) -> None:
    """Syntax errors and unknown names raise FormulaError naming the character position."""
    with pytest.raises(FormulaError, match=rf"position {pos}\b") as err:
        parse(text, NAMES)
    assert "\n" not in str(err.value)
    assert "expected" in str(err.value)


def test_deep_nesting_is_a_formula_error() -> None:
    """Pathological nesting fails cleanly instead of overflowing the stack."""
    with pytest.raises(FormulaError, match="position"):
        parse("(" * 500 + "water" + ")" * 500, NAMES)


def test_to_string_unknown_concept() -> None:
    """A concept without a name (including negative numbers) is a FormulaError."""
    for bad in (Leaf(len(NAMES)), Leaf(-1)):
        with pytest.raises(FormulaError, match="concept"):
            to_string(Or(A, bad), NAMES)


def test_leaves_and_length() -> None:
    """Leaves in order with repeats; length counts leaves, optionally Not nodes too."""
    f = Or(And(A, Not(B)), Not(Not(A)))
    assert leaves(f) == (1, 2, 1)
    assert length(f) == 3
    assert length(f, count_not=True) == 6
    assert length(A) == 1 and length(Not(A), count_not=True) == 2


def test_evaluate_small_masks() -> None:
    """And, Or, Not are elementwise; leaf masks are left untouched; uint8 masks are booleans."""
    masks = {1: np.array([1, 1, 0, 0], bool), 2: np.array([1, 0, 1, 0], np.uint8)}
    before = {k: v.copy() for k, v in masks.items()}
    got = evaluate(And(Or(A, B), Not(And(A, B))), masks.__getitem__)
    np.testing.assert_array_equal(got, [False, True, True, False])
    assert got.dtype == bool
    np.testing.assert_array_equal(evaluate(Not(B), masks.__getitem__), [0, 1, 0, 1])
    leaf_out = evaluate(A, masks.__getitem__)
    leaf_out[:] = False
    for k in masks:
        np.testing.assert_array_equal(masks[k], before[k])


@settings(max_examples=100, deadline=None)
@given(formulas)
def test_dict_round_trip(f: Formula) -> None:
    """from_dict(to_dict(f)) == f, through JSON too."""
    assert from_dict(json.loads(json.dumps(to_dict(f)))) == f


def test_to_dict_shape_and_bad_dicts() -> None:
    """The dict layout is as documented; malformed dicts raise FormulaError."""
    assert to_dict(Or(Not(A), B)) == {"op": "or", "left": {"op": "not", "child": {
        "op": "leaf", "concept": 1}}, "right": {"op": "leaf", "concept": 2}}
    for bad in ({"op": "xor"}, {"op": "and", "left": {"op": "leaf", "concept": 1}},
                {"op": "leaf", "concept": "1"}, {"op": "leaf", "concept": True}, [1]):
        with pytest.raises(FormulaError):
            from_dict(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("f", "g"), [
    (Or(A, B), Or(B, A)),
    (And(A, B), And(B, A)),
    (Or(Or(A, B), C), Or(A, Or(B, C))),
    (And(And(A, B), C), And(A, And(B, C))),
    (Not(Or(A, B)), And(Not(A), Not(B))),
    (Not(And(A, B)), Or(Not(A), Not(B))),
    (Or(A, And(A, B)), A),
    (And(A, Or(A, B)), A),
    (Not(Not(A)), A),
    (And(A, Not(A)), And(B, Not(B))),
    (Or(C, Not(C)), Or(D, Not(D))),
    (And(A, Or(B, C)), Or(And(A, B), And(A, C))),
])
def test_equivalent_identities(f: Formula, g: Formula) -> None:
    """Commutativity, associativity, De Morgan, absorption, double negation, constants."""
    assert equivalent(f, g)
    assert canonical_key(f) == canonical_key(g)


@pytest.mark.parametrize(("f", "g"), [
    (Or(A, B), And(A, B)),
    (And(A, Not(B)), And(B, Not(A))),
    (A, B),
    (A, Not(A)),
    (And(A, Not(A)), Or(A, Not(A))),
    (Or(A, And(B, Not(B))), Or(B, And(A, Not(A))))])
def test_not_equivalent(f: Formula, g: Formula) -> None:
    """Different Boolean functions get different keys."""
    assert not equivalent(f, g)


def test_canonical_key_layout() -> None:
    """Key = (essential concepts ascending, truth table in product order); constants."""
    assert canonical_key(And(A, Not(A))) == ((), (0,))
    assert canonical_key(Or(B, Not(B))) == ((), (1,))
    assert canonical_key(And(Leaf(12), Not(Leaf(3)))) == ((3, 12), (0, 1, 0, 0))
    assert canonical_key(Or(A, And(C, Not(C)))) == ((1,), (0, 1))


def _truth_table(f: Formula, concepts: list[int]) -> np.ndarray:
    """Brute force: evaluate f on masks enumerating every assignment of ``concepts``."""
    grid = np.array(list(itertools.product((False, True), repeat=len(concepts))), bool)
    cols = {c: grid[:, i] for i, c in enumerate(concepts)}
    return evaluate(f, cols.__getitem__)


@settings(max_examples=300, deadline=None)
@given(small_formulas, small_formulas)
def test_equivalent_matches_brute_force_truth_tables(f: Formula, g: Formula) -> None:
    """equivalent(f, g) iff their truth tables over the union of leaves agree."""
    concepts = sorted(set(leaves(f)) | set(leaves(g)))
    want = bool(np.array_equal(_truth_table(f, concepts), _truth_table(g, concepts)))
    assert equivalent(f, g) == want


@settings(max_examples=100, deadline=None)
@given(formulas)
def test_key_support_is_the_essential_concepts(f: Formula) -> None:
    """The key's concepts are exactly those whose flip changes some output."""
    concepts = sorted(set(leaves(f)))
    table = _truth_table(f, concepts).reshape((2,) * len(concepts))
    essential = tuple(c for i, c in enumerate(concepts)
                      if not np.array_equal(np.take(table, 0, i), np.take(table, 1, i)))
    assert canonical_key(f)[0] == essential


def test_canonical_key_speed() -> None:
    """Uncached keys of 6-leaf formulas: well over a hundred per second."""
    rng = np.random.default_rng(0)
    fs = []
    for _ in range(100):
        f: Formula = Leaf(int(rng.integers(1, 7)))
        for _ in range(5):
            g = Leaf(int(rng.integers(1, 7)))
            f = [And, Or][int(rng.integers(2))](f, Not(g) if rng.random() < 0.4 else g)
        fs.append(f)
    canonical_key.cache_clear()
    start = time.perf_counter()
    for f in fs:
        canonical_key(f)
    assert len(fs) / (time.perf_counter() - start) > 100
