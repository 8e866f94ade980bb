"""Compositional explanation formulas over concept atoms (Mu & Andreas 2020; La Rosa et al. 2023).

A formula is a small immutable tree of :class:`Leaf` (a concept, i.e. a global label number of
the dataset), :class:`Not`, :class:`And` and :class:`Or`. Trees are hashable, so they can key
dicts and caches.

Text form (one grammar, printed and parsed here): keywords ``OR``, ``AND``, ``NOT`` (any case
when parsing), precedence NOT > AND > OR, AND and OR left-associative, parentheses. The printer
emits the fewest parentheses that make ``parse(to_string(f)) == f`` for every tree, e.g.
``(water OR river) AND NOT blue``. A concept name prints bare when it matches
``[A-Za-z0-9_][A-Za-z0-9_\\-./']*`` and is not a keyword, else double-quoted with ``\\"`` and
``\\\\`` escaped (``"potted plant"``, ``"or"``).

:func:`canonical_key` decides logical equivalence with pyeda (imported lazily): the key is the
essential concepts (those the Boolean function depends on) and the truth table over them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np


class FormulaError(ValueError):
    """A formula that cannot be parsed, printed or decoded (one-line message)."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """A concept atom: the global label number of a concept."""

    concept: int


@dataclass(frozen=True, slots=True)
class Not:
    """Negation of a formula."""

    child: Formula


@dataclass(frozen=True, slots=True)
class And:
    """Conjunction of two formulas."""

    left: Formula
    right: Formula


@dataclass(frozen=True, slots=True)
class Or:
    """Disjunction of two formulas."""

    left: Formula
    right: Formula


Formula: TypeAlias = Leaf | Not | And | Or

_KEYWORDS = frozenset({"OR", "AND", "NOT"})
_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_\-./']*")
_PREC = {Or: 1, And: 2, Not: 3, Leaf: 4}
_MAX_DEPTH = 100


def leaves(f: Formula) -> tuple[int, ...]:
    """Concepts of the formula in left-to-right order, repeats included."""
    if isinstance(f, Leaf):
        return (f.concept,)
    if isinstance(f, Not):
        return leaves(f.child)
    return leaves(f.left) + leaves(f.right)


def positive_leaves(f: Formula) -> tuple[int, ...]:
    """Concepts of the formula's positive atoms (not under a NOT), left to right."""
    if isinstance(f, Leaf):
        return (f.concept,)
    if isinstance(f, Not):
        return ()
    return positive_leaves(f.left) + positive_leaves(f.right)


def length(f: Formula, count_not: bool = False) -> int:
    """Number of leaves (CCE's length); with ``count_not``, plus the number of Not nodes."""
    if isinstance(f, Leaf):
        return 1
    if isinstance(f, Not):
        return length(f.child, count_not) + int(count_not)
    return length(f.left, count_not) + length(f.right, count_not)


def _quote(name: str) -> str:
    """The name as printed: bare when unambiguous, else double-quoted with escapes."""
    if _BARE.fullmatch(name) and name.upper() not in _KEYWORDS:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_string(f: Formula, names: Sequence[str]) -> str:
    """Print the formula with minimal parentheses; ``names[concept]`` is a concept's name.

    Raises:
        FormulaError: a concept number outside ``range(len(names))``.
    """
    if isinstance(f, Leaf):
        if not 0 <= f.concept < len(names):
            raise FormulaError(f"concept {f.concept} has no name (expected 0..{len(names) - 1})")
        return _quote(names[f.concept])
    if isinstance(f, Not):
        return "NOT " + _operand(f.child, 3, names)
    op, prec = ("AND", 2) if isinstance(f, And) else ("OR", 1)
    return f"{_operand(f.left, prec, names)} {op} {_operand(f.right, prec + 1, names)}"


def _operand(f: Formula, min_prec: int, names: Sequence[str]) -> str:
    """Print ``f``, parenthesised when its precedence is below ``min_prec``."""
    text = to_string(f, names)
    return f"({text})" if _PREC[type(f)] < min_prec else text


_TOKEN = re.compile(rf"(?P<paren>[()])|(?P<quoted>\")|(?P<bare>{_BARE.pattern})")


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    """Yield (kind, value, position) with kind in ``( ) KW NAME``, then ("END", "", len)."""
    pos = 0
    while (pos := len(text) - len(text[pos:].lstrip())) < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(f"unexpected character {text[pos]!r} at position {pos} in "
                               f"{text!r}; expected a concept name, NOT, AND, OR or a parenthesis")
        if m.lastgroup == "quoted":
            value, end = _read_quoted(text, pos)
            yield "NAME", value, pos
        elif m.lastgroup == "paren":
            value, end = m.group(), m.end()
            yield value, value, pos
        else:
            value, end = m.group(), m.end()
            upper = value.upper()
            yield ("KW", upper, pos) if upper in _KEYWORDS else ("NAME", value, pos)
        pos = end
    yield "END", "", len(text)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Decode the quoted name opening at ``start``; return it and the position after it."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in '"\\':
                raise FormulaError(f"bad escape at position {i} in {text!r}; "
                                   'expected \\" or \\\\ inside a quoted name')
            ch, i = text[i + 1], i + 1
        out.append(ch)
        i += 1
    raise FormulaError(f"unterminated quoted name opened at position {start} in {text!r}; "
                       'expected a closing "')


class _Parser:
    """Recursive-descent parser: or := and (OR and)*; and := un (AND un)*; un := NOT un | atom."""

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.text = text
        self.index = {name: number for number, name in reversed(list(enumerate(names)))}
        self.toks = _tokens(text)
        self.tok = next(self.toks)
        self.depth = 0

    def fail(self, expected: str) -> FormulaError:
        """An error naming the current token, its position and what was expected."""
        kind, value, pos = self.tok
        got = "end of input" if kind == "END" else repr(value)
        return FormulaError(f"unexpected {got} at position {pos} in {self.text!r}; "
                            f"expected {expected}")

    def advance(self) -> None:
        """Consume the current token."""
        self.tok = next(self.toks)

    def binary(self, level: int = 0) -> Formula:
        """Parse ``operand (op operand)*`` left-associatively: OR at level 0, AND at level 1."""
        if level == 2:
            return self.unary()
        op, node = (("OR", Or), ("AND", And))[level]
        f = self.binary(level + 1)
        while self.tok[:2] == ("KW", op):
            self.advance()
            f = node(f, self.binary(level + 1))
        return f

    def unary(self) -> Formula:
        """Parse ``NOT unary``, ``( or )`` or a concept name."""
        kind, value, pos = self.tok
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise FormulaError(f"nesting deeper than {_MAX_DEPTH} at position {pos}; expected "
                               "fewer nested NOTs or parentheses")
        try:
            if (kind, value) == ("KW", "NOT"):
                self.advance()
                return Not(self.unary())
            if kind == "(":
                self.advance()
                f = self.binary()
                if self.tok[0] != ")":
                    raise self.fail(f"')' to close the '(' at position {pos}, AND or OR")
                self.advance()
                return f
            if kind == "NAME":
                if value not in self.index:
                    raise FormulaError(f"unknown concept name {value!r} at position {pos} in "
                                       f"{self.text!r}; expected one of the dataset's names")
                self.advance()
                return Leaf(self.index[value])
            raise self.fail("a concept name, NOT or '('")
        finally:
            self.depth -= 1


def parse(text: str, names: Sequence[str]) -> Formula:
    """Parse the text form printed by :func:`to_string`; the lowest number wins a shared name.

    Raises:
        FormulaError: a syntax error or an unknown name (the message gives the position).
    """
    parser = _Parser(text, names)
    f = parser.binary()
    if parser.tok[0] != "END":
        raise parser.fail("AND, OR or end of input after a complete formula")
    return f


def evaluate(f: Formula, leaf: Callable[[int], np.ndarray]) -> np.ndarray:
    """Evaluate on boolean masks: ``leaf(c)`` is the mask of concept c (never modified).

    The result is a new boolean array (never one returned by ``leaf``).
    """
    out = _evaluate(f, leaf)
    return out.copy() if isinstance(f, Leaf) else out


def _evaluate(f: Formula, leaf: Callable[[int], np.ndarray]) -> np.ndarray:
    """Evaluate without copying a bare leaf's mask."""
    if isinstance(f, Leaf):
        return np.asarray(leaf(f.concept), dtype=bool)
    if isinstance(f, Not):
        return ~_evaluate(f.child, leaf)
    if isinstance(f, And):
        return _evaluate(f.left, leaf) & _evaluate(f.right, leaf)
    return _evaluate(f.left, leaf) | _evaluate(f.right, leaf)


def _to_pyeda(f: Formula) -> Any:
    """The pyeda expression of the formula, concept c as variable ``c<c>``."""
    from pyeda.inter import exprvar

    if isinstance(f, Leaf):
        return exprvar(f"c{int(f.concept)}")
    if isinstance(f, Not):
        return ~_to_pyeda(f.child)
    if isinstance(f, And):
        return _to_pyeda(f.left) & _to_pyeda(f.right)
    return _to_pyeda(f.left) | _to_pyeda(f.right)


@lru_cache(maxsize=65536)
def canonical_key(f: Formula) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A key equal for two formulas iff they are logically equivalent.

    pyeda enumerates the satisfying cubes of the formula (``satisfy_all``, a disjoint cover);
    they fill a truth table over its concepts, from which the inessential concepts (flipping
    them never changes the value) are projected out.

    Returns:
        (essential concepts ascending, truth table over them): the table lists the value for
        every assignment in ``itertools.product((0, 1), repeat=k)`` order (first concept is the
        most significant). Constant false is ``((), (0,))``, constant true ``((), (1,))``.
    """
    expr = _to_pyeda(f)
    support = sorted(expr.support, key=lambda v: int(v.name[1:]))
    axis = {v: i for i, v in enumerate(support)}
    table = np.zeros((2,) * len(support), dtype=bool)
    for cube in expr.satisfy_all():
        index = [slice(None)] * len(support)
        for v, value in cube.items():
            index[axis[v]] = value
        table[tuple(index)] = True
    keep = [not np.array_equal(np.take(table, 0, i), np.take(table, 1, i))
            for i in range(len(support))]
    table = table[tuple(slice(None) if k else 0 for k in keep)]
    essential = tuple(int(v.name[1:]) for v, k in zip(support, keep, strict=True) if k)
    return essential, tuple(int(x) for x in np.ravel(table))


def equivalent(f: Formula, g: Formula) -> bool:
    """Whether two formulas are the same Boolean function of their concepts."""
    return canonical_key(f) == canonical_key(g)


def to_dict(f: Formula) -> dict[str, Any]:
    """JSON-ready nested dict: ``{"op": "leaf"|"not"|"and"|"or", ...}``."""
    if isinstance(f, Leaf):
        return {"op": "leaf", "concept": int(f.concept)}
    if isinstance(f, Not):
        return {"op": "not", "child": to_dict(f.child)}
    op = "and" if isinstance(f, And) else "or"
    return {"op": op, "left": to_dict(f.left), "right": to_dict(f.right)}


def from_dict(d: dict[str, Any]) -> Formula:
    """Inverse of :func:`to_dict`.

    Raises:
        FormulaError: a malformed dict (unknown op, missing key, non-integer concept).
    """
    if not isinstance(d, dict):
        raise FormulaError(f"expected a formula dict, got {d!r}")
    op = d.get("op")
    try:
        if op == "leaf":
            concept = d["concept"]
            if isinstance(concept, bool) or not isinstance(concept, int | np.integer):
                raise FormulaError(f"expected an integer concept, got {concept!r}")
            return Leaf(int(concept))
        if op == "not":
            return Not(from_dict(d["child"]))
        if op in ("and", "or"):
            node = And if op == "and" else Or
            return node(from_dict(d["left"]), from_dict(d["right"]))
    except KeyError as err:
        raise FormulaError(f"formula dict {d!r} lacks key {err}") from None
    raise FormulaError(f"unknown formula op {op!r}; expected leaf, not, and or or")
