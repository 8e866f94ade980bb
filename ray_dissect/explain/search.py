"""Compositional explanations by beam search, exact, in label-set space.

Formulas are built left-deep as ``F op t`` with op in {OR, AND, AND NOT} and t an atom (a
concept present in the dataset). The semantics follow Clustered Compositional Explanations:

1. IoU of every atom (the unary pass); with ``length`` 1 the beam is the top ``beam`` atoms.
2. Otherwise the first beam is the top ``first_beam`` (default 2 x ``beam``) atoms with IoU > 0.
3. ``length - 1`` times: expand every beam formula F by every atom t not already in F and
   every op; keep the best ``beam`` of (old beam + candidates) after removing logically
   equivalent formulas (pyeda decides; ``dedup: string`` keeps structurally distinct ones).
4. The explanation is the best formula of the final beam.

Order: IoU descending (exact rational comparison of integer counts), then the number of
leaves ascending, then :func:`order_key` ascending (plain string order, so ``L10 < L2``).
Atoms absent from the dataset are never candidates, so ``F OR empty`` clones cannot fill the
beam.

Why it is fast: a formula's mask is a boolean over label sets, not pixels. For a beam formula
F (f over sets), with c the pixel count of each set and b the unit mask's count per set,
``M.T @ (c * f)`` gives |F and t| and ``M.T @ (b * f)`` gives |F and t and B| for every atom t
at once, hence the exact IoU of all 3 x atoms candidates from two sparse products. Memory is
O(n_sets + atoms x beam), independent of the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.formula import (
    And,
    Formula,
    Leaf,
    Not,
    Or,
    canonical_key,
    evaluate,
    leaves,
    length,
)

OPS = ("or", "and", "and_not")


@dataclass(frozen=True)
class SearchSpace:
    """The dataset side of every search, built once per job.

    Attributes:
        membership_t: (n_labels, n_sets) CSR 0/1, sets containing each label.
        set_counts: (n_sets,) float64 pixels of each set over valid images.
        label_area: (n_labels,) float64 |L|.
        atoms: (A,) int64 labels with |L| > 0, ascending.
        image_of_entry: (q,) int64 image of each entry of the per-image set histogram.
        entry_sets: (q,) int64 its set; entry_valid: (q,) bool its image is valid.
    """

    membership_t: sp.csr_matrix
    set_counts: np.ndarray
    label_area: np.ndarray
    atoms: np.ndarray
    image_of_entry: np.ndarray
    entry_sets: np.ndarray
    entry_valid: np.ndarray

    @classmethod
    def from_index(cls, index: ConceptIndex) -> SearchSpace:
        counts = index.set_counts()
        area = index.label_area()
        image_of_entry = np.repeat(np.arange(index.n_images), np.diff(index.image_indptr))
        return cls(index.membership.T.tocsr(), counts, area, np.flatnonzero(area > 0),
                   image_of_entry, index.image_sets, index.valid[image_of_entry])

    def leaf(self, concept: int) -> np.ndarray:
        """(n_sets,) bool: the sets that contain ``concept``."""
        out = np.zeros(self.membership_t.shape[1], dtype=bool)
        row = self.membership_t
        out[row.indices[row.indptr[concept]:row.indptr[concept + 1]]] = True
        return out


@dataclass(frozen=True)
class SearchParams:
    """Beam search settings (see the module docstring)."""

    length: int = 3
    beam: int = 5
    first_beam: int | None = None
    count_not: bool = False
    dedup: Literal["equivalence", "string"] = "equivalence"


@dataclass(frozen=True)
class Scored:
    """A formula with its exact counts |B and F| and |B or F|."""

    formula: Formula
    inter: int
    union: int

    @property
    def iou(self) -> float:
        return self.inter / self.union if self.union else 0.0


@dataclass(frozen=True)
class SearchResult:
    """The final beam (best first), exact IoUs computed in expansions, and the best atom."""

    beam: tuple[Scored, ...]
    visited: int
    best_unary: Scored | None


def order_key(f: Formula) -> str:
    """Prefix form with concept numbers, e.g. ``O(A(L3,N(L5)),L7)``; the last tie-breaker."""
    if isinstance(f, Leaf):
        return f"L{f.concept}"
    if isinstance(f, Not):
        return f"N({order_key(f.child)})"
    tag = "A" if isinstance(f, And) else "O"
    return f"{tag}({order_key(f.left)},{order_key(f.right)})"


def _sort_key(s: Scored) -> tuple[Fraction, int, str]:
    """Search order: exact IoU descending, leaves ascending, :func:`order_key` ascending."""
    iou = Fraction(s.inter, s.union) if s.union else Fraction(0)
    return (-iou, length(s.formula), order_key(s.formula))


@dataclass
class _Candidates:
    """Expansions of the beam, as arrays: (parent, atom, op) and exact counts."""

    parent: np.ndarray
    atom: np.ndarray
    op: np.ndarray
    inter: np.ndarray
    union: np.ndarray

    def formula(self, i: int, beam: list[Scored]) -> Scored:
        f, t = beam[int(self.parent[i])].formula, Leaf(int(self.atom[i]))
        node = (Or(f, t), And(f, t), And(f, Not(t)))[int(self.op[i])]
        return Scored(node, int(self.inter[i]), int(self.union[i]))


def _expand(beam: list[Scored], space: SearchSpace, b: np.ndarray, b_sets: np.ndarray,
            mt_b: sp.csr_matrix, area_b: int, unary_inter: np.ndarray,
            params: SearchParams) -> _Candidates:
    atoms, cols = space.atoms, []
    for p, s in enumerate(beam):
        f = evaluate(s.formula, space.leaf)
        x = (space.membership_t @ (space.set_counts * f))[atoms]     # |F and t|
        y = (mt_b @ (b[b_sets] * f[b_sets]))[atoms]                  # |F and t and B|
        area_f = s.union - area_b + s.inter
        ok = ~np.isin(atoms, leaves(s.formula))
        t_inter, t_area = unary_inter, space.label_area[atoms]
        inter = np.stack([s.inter + t_inter - y, y, s.inter - y])
        area = np.stack([area_f + t_area - x, x, area_f - x])
        for op in range(3):
            grow = 2 if (op == 2 and params.count_not) else 1
            if length(s.formula, params.count_not) + grow > params.length:
                continue
            n = int(ok.sum())
            cols.append((np.full(n, p), atoms[ok], np.full(n, op), inter[op][ok],
                         area_b + area[op][ok] - inter[op][ok]))
    if not cols:
        return _Candidates(*(np.zeros(0, np.int64) for _ in range(5)))
    return _Candidates(*(np.rint(np.concatenate(c)).astype(np.int64) for c in zip(*cols,
                                                                              strict=True)))


def _dedup_first(entries: list[Scored], k: int, dedup: str) -> list[Scored]:
    seen: set[object] = set()
    kept = []
    for s in entries:
        key = canonical_key(s.formula) if dedup == "equivalence" else s.formula
        if key not in seen:
            seen.add(key)
            kept.append(s)
            if len(kept) == k:
                break
    return kept


def _select(old: list[Scored], cand: _Candidates, params: SearchParams) -> list[Scored]:
    """The first ``beam`` of (old beam + candidates) in search order, after deduplication.

    Only the candidates whose float IoU reaches the m-th largest are materialised; rounding
    is monotone, so every candidate left out sorts after them. m grows until the k-th kept
    formula is itself within that set (or everything has been looked at).
    """
    k = params.beam
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(cand.union > 0, cand.inter / np.maximum(cand.union, 1), 0.0)
    m = 4 * k
    while True:
        if len(score) > m:
            cut = np.partition(score, len(score) - m)[len(score) - m]
            idx = np.flatnonzero(score >= cut)
        else:
            cut, idx = -np.inf, np.arange(len(score))
        entries = old + [cand.formula(int(i), old) for i in idx]
        entries.sort(key=_sort_key)
        kept = _dedup_first(entries, k, params.dedup)
        if len(idx) == len(score) or (len(kept) == k and kept[-1].iou >= cut):
            return kept
        m *= 4


class Selector(Protocol):
    """A pruned selection (see :mod:`ray_dissect.pruning`): same beam, fewer exact IoUs."""

    def select(self, old: list[Scored], cand: _Candidates, mask: UnitMask, beam: int,
               dedup: str) -> tuple[list[Scored], int]: ...


def beam_search(mask: UnitMask, space: SearchSpace, params: SearchParams,
                pruner: Selector | None = None) -> SearchResult:
    """Search the best compositional explanation of one binary unit mask (exact IoUs).

    ``visited`` counts the exact IoUs of the expansion steps: every candidate without a
    ``pruner``, the ones a pruner had to look at with one.
    """
    n_sets = space.membership_t.shape[1]
    b = np.bincount(mask.sets, weights=mask.counts, minlength=n_sets)
    b_sets = np.flatnonzero(b)
    mt_b = space.membership_t[:, b_sets].tocsr()
    area_b = mask.area
    unary_inter = np.rint(mt_b @ b[b_sets])[space.atoms]
    unions = area_b + space.label_area[space.atoms] - unary_inter
    unary = [Scored(Leaf(int(a)), int(i), int(u))
             for a, i, u in zip(space.atoms, unary_inter, unions, strict=True)]
    unary.sort(key=_sort_key)
    positive = [s for s in unary if s.inter > 0]
    best_unary = positive[0] if positive else None
    if params.length == 1:
        return SearchResult(tuple(positive[: params.beam]), 0, best_unary)
    beam = positive[: params.first_beam or 2 * params.beam]
    visited = 0
    for _ in range(params.length - 1):
        if not beam:
            break
        cand = _expand(beam, space, b, b_sets, mt_b, area_b, unary_inter, params)
        if pruner is None:
            visited += len(cand.inter)
            beam = _select(beam, cand, params)
        else:
            beam, seen = pruner.select(beam, cand, mask, params.beam, params.dedup)
            visited += seen
    return SearchResult(tuple(beam), visited, best_unary)
