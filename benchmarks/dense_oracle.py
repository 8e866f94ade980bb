"""Dense-mask beam search for Compositional Explanations: the oracle and the speed baseline.

A deliberately plain, exhaustive implementation. Every formula's mask is materialised as a
dense boolean array over all pixels (``ray_dissect.explain.formula.evaluate``) and its intersection
and union with the unit mask are counted from it. Tests of the fast search (which works in
the compressed label-set space) compare its final beam with this one, and the search
benchmark uses this as its baseline. It imports nothing from ``ray_dissect`` but the
formula module.

Semantics (the fast search implements exactly the same):

1. Atoms are the concepts whose mask is non-empty, in ascending concept number.
2. Every atom is scored.
3. ``length == 1``: the final beam is the first ``beam`` atoms with IoU > 0, in the ranking
   order below.
4. Otherwise the initial beam is the first ``first_beam`` (default ``2 * beam``) atoms with
   IoU > 0; none -> ``[]``.
5. ``length - 1`` rounds: for each formula F of the beam (in beam order), for each atom t
   (ascending) not among ``leaves(F)``, the candidates ``Or(F, t)``, ``And(F, t)``,
   ``And(F, Not(t))``; those with ``length(candidate, count_not) > length`` are dropped. The
   pool is the current beam plus the candidates, ranked; duplicates are dropped keeping the
   first in ranking order (``dedup="equivalence"``: equal ``canonical_key``;
   ``dedup="string"``: equal ``repr``, i.e. structurally identical); the new beam is the first
   ``beam`` of what remains.

Ranking order (:func:`rank_key`), best first:

a. descending IoU, compared exactly as fractions (``a/b > c/d`` iff ``a*d > c*b``; ``0/0``
   counts as 0), so equal ratios such as 2/4 and 3/6 tie;
b. then ascending ``length(f)`` -- the number of leaves, i.e. ``count_not=False`` whatever
   the search's ``count_not``;
c. then ascending :func:`order_key` compared as a plain Python ``str`` (code-point order, so
   ``"L10" < "L2"``).

Run ``python benchmarks/dense_oracle.py`` for a tiny logged demo.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np

from ray_dissect.explain import formula as fm
from ray_dissect.explain.formula import And, Formula, Leaf, Not, Or

log = logging.getLogger(__name__)

Scored = tuple[Formula, int, int]
"""A formula with its exact counts: (formula, |B and F|, |B or F|)."""

DEDUP_MODES = ("equivalence", "string")


def order_key(f: Formula) -> str:
    """The structural string of ``f`` in prefix form with concept numbers.

    ``Leaf(c)`` -> ``"L<c>"`` (decimal, no padding), ``Not(x)`` -> ``"N(<x>)"``,
    ``And(x, y)`` -> ``"A(<x>,<y>)"``, ``Or(x, y)`` -> ``"O(<x>,<y>)"``; no spaces. E.g.
    ``Or(And(Leaf(3), Not(Leaf(5))), Leaf(7))`` -> ``"O(A(L3,N(L5)),L7)"``.
    """
    if isinstance(f, Leaf):
        return f"L{int(f.concept)}"
    if isinstance(f, Not):
        return f"N({order_key(f.child)})"
    if isinstance(f, And):
        return f"A({order_key(f.left)},{order_key(f.right)})"
    if isinstance(f, Or):
        return f"O({order_key(f.left)},{order_key(f.right)})"
    raise TypeError(f"not a formula: {f!r}")


def iou(inter: int, union: int) -> float:
    """``inter / union`` as a float; 0.0 when ``union == 0``."""
    return inter / union if union else 0.0


def rank_key(scored: Scored) -> tuple[Fraction, int, str]:
    """Sort key of the ranking order (ascending sort puts the best first); see the module doc."""
    f, inter, union = scored
    ratio = Fraction(inter, union) if union else Fraction(0)
    return (-ratio, fm.length(f), order_key(f))


def dense_iou(unit: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """Exact ``(|unit and mask|, |unit or mask|)`` of two boolean arrays of the same shape."""
    unit = np.asarray(unit, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if unit.shape != mask.shape:
        raise ValueError(f"shape mismatch: unit {unit.shape}, mask {mask.shape}")
    return int(np.count_nonzero(unit & mask)), int(np.count_nonzero(unit | mask))


def _select(pool: list[Scored], beam: int, dedup: str) -> list[Scored]:
    """The first ``beam`` of ``pool`` in ranking order, duplicates (per ``dedup``) dropped."""
    out: list[Scored] = []
    seen: set = set()
    for item in sorted(pool, key=rank_key):
        key = fm.canonical_key(item[0]) if dedup == "equivalence" else repr(item[0])
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
        if len(out) == beam:
            break
    return out


def dense_beam_search(
    unit: np.ndarray,
    concepts: dict[int, np.ndarray],
    *,
    length: int = 3,
    beam: int = 5,
    first_beam: int | None = None,
    count_not: bool = False,
    dedup: str = "equivalence",
) -> list[Scored]:
    """Final beam of the compositional search for one unit, best first (see the module doc).

    ``unit`` is the unit's boolean mask (any shape); ``concepts`` maps concept number to a
    boolean mask of the same shape (only the concepts to consider). Returns
    ``[(formula, inter, union), ...]`` with exact integer counts.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if first_beam is None:
        first_beam = 2 * beam
    if first_beam < 1:
        raise ValueError(f"first_beam must be >= 1, got {first_beam}")
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {DEDUP_MODES}, got {dedup!r}")

    unit = np.asarray(unit, dtype=bool)
    masks: dict[int, np.ndarray] = {}
    for c in sorted(concepts):
        m = np.asarray(concepts[c], dtype=bool)
        if m.shape != unit.shape:
            raise ValueError(f"concept {c}: shape {m.shape} != unit shape {unit.shape}")
        if m.any():
            masks[int(c)] = m
    atoms = list(masks)  # ascending concept number, non-empty only

    def score(f: Formula) -> Scored:
        return (f, *dense_iou(unit, fm.evaluate(f, masks.__getitem__)))

    unary = [score(Leaf(c)) for c in atoms]
    positive = [s for s in unary if s[1] > 0]  # IoU > 0 iff inter > 0
    if length == 1:
        return _select(positive, beam, dedup)
    current = _select(positive, first_beam, dedup)
    if not current:
        return []

    for _ in range(length - 1):
        candidates: list[Scored] = []
        for f, _inter, _union in current:
            used = set(fm.leaves(f))
            for t in atoms:
                if t in used:
                    continue
                for cand in (Or(f, Leaf(t)), And(f, Leaf(t)), And(f, Not(Leaf(t)))):
                    if fm.length(cand, count_not=count_not) <= length:
                        candidates.append(score(cand))
        current = _select(current + candidates, beam, dedup)
    return current


def _demo() -> None:
    rng = np.random.default_rng(0)
    shape = (4, 64)
    concepts = {c: rng.random(shape) < p for c, p in enumerate((0.1, 0.2, 0.3, 0.05, 0.4))}
    unit = (concepts[1] | concepts[3]) & ~concepts[4]
    names = [f"c{c}" for c in sorted(concepts)]
    for f, inter, union in dense_beam_search(unit, concepts, length=3, beam=5):
        log.info("%-40s IoU %.4f (%d/%d)", fm.to_string(f, names), iou(inter, union), inter, union)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _demo()
