"""Beam selection pruned by IoU upper bounds (CCE's heuristic search), for study.

With ``heuristic: mmesh | cfh | areas`` each step scores every candidate with an admissible
upper bound of its IoU (:mod:`ray_dissect.explain.heuristics`), then visits candidates in descending
bound order, computing exact IoUs, until the next bound is below the k-th best exact IoU found:
the remaining candidates cannot enter the beam. ``visited`` counts the exact IoUs computed.
Because the bounds are admissible the beam is exactly the exhaustive one (tested).

The bounds need per-image geometry (bounding boxes, largest inscribed rectangles) of every
atom and beam formula, hence the per-pixel label-set ids of the whole dataset: a
:class:`Pruner` holds (N, sh, sw) int64 ids plus (atoms, N) statistics, O(N x (S + 9 x atoms))
memory. In this design exact IoUs are cheaper than the bounds, so pruning saves no time here;
it exists to study the heuristics (visited states), as CCE's compare_heuristics does.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from ray_dissect.concepts.masks import UnitMask
from ray_dissect.explain.formula import canonical_key, evaluate
from ray_dissect.explain.heuristics import SampleStats, bounding_boxes, estimates, largest_inscribed
from ray_dissect.explain.search import Scored, SearchSpace, _Candidates, _sort_key

MARGIN = 1e-9  # bounds are floats: prune only when clearly below the k-th exact IoU
ATOM_CHUNK = 16


@dataclass(frozen=True)
class _Geometry:
    box: np.ndarray        # (..., N, 4) int32
    inscribed: np.ndarray  # (..., N, 4) int32


def _geometry(masks: np.ndarray) -> _Geometry:
    return _Geometry(bounding_boxes(masks), largest_inscribed(masks))


class Pruner:
    """Bounds for one search space and dataset (built once, reused for every unit).

    Args:
        space: the search space.
        set_ids: (N, sh, sw) int64 global label-set id of every pixel.
        kind: one of ``mmesh``, ``cfh``, ``areas``.
    """

    def __init__(self, space: SearchSpace, set_ids: np.ndarray, kind: str) -> None:
        self.space, self.set_ids, self.kind = space, set_ids, kind
        self.size = int(set_ids.shape[1] * set_ids.shape[2])
        n = set_ids.shape[0]
        self.column = {int(a): i for i, a in enumerate(space.atoms)}
        boxes, rects, areas = [], [], []
        for start in range(0, len(space.atoms), ATOM_CHUNK):
            chunk = space.atoms[start:start + ATOM_CHUNK]
            masks = np.stack([space.leaf(int(a))[set_ids] for a in chunk])
            geo = _geometry(masks)
            boxes.append(geo.box)
            rects.append(geo.inscribed)
            areas.append(masks.reshape(len(chunk), n, -1).sum(axis=2))
        self.atom_geo = _Geometry(np.concatenate(boxes), np.concatenate(rects))
        self.atom_area = np.concatenate(areas).astype(np.int64)

    def _unit_parts(self, mask: UnitMask) -> tuple[np.ndarray, np.ndarray]:
        """(N,) unit pixels per image and (A, N) |B and t| per image for every atom."""
        n = self.set_ids.shape[0]
        unit_area = np.bincount(mask.images, weights=mask.counts, minlength=n).astype(np.int64)
        per_set = self.space.membership_t[:, mask.sets][self.space.atoms]  # (A, m) 0/1
        inter = np.zeros((len(self.space.atoms), n), dtype=np.int64)
        weighted = per_set.multiply(mask.counts[None, :]).tocoo()
        np.add.at(inter, (weighted.row, mask.images[weighted.col]), weighted.data.astype(np.int64))
        return unit_area, inter

    def _formula_stats(self, f: np.ndarray, mask: UnitMask) -> SampleStats:
        n = self.set_ids.shape[0]
        dense = f[self.set_ids]
        geo = _geometry(dense)
        area = dense.reshape(n, -1).sum(axis=1).astype(np.int64)
        inter = np.bincount(mask.images, weights=mask.counts * f[mask.sets], minlength=n)
        return SampleStats(area, inter.astype(np.int64), geo.box, geo.inscribed)

    def bounds(self, beam: list[Scored], cand: _Candidates, mask: UnitMask) -> np.ndarray:
        """(candidates,) float64 upper bound of each candidate's IoU."""
        unit_area, atom_inter = self._unit_parts(mask)
        atoms = SampleStats(self.atom_area, atom_inter, self.atom_geo.box,
                            self.atom_geo.inscribed)
        cols = np.array([self.column[int(a)] for a in cand.atom], dtype=np.int64)
        out = np.zeros(len(cand.atom))
        for p, s in enumerate(beam):
            sel = cand.parent == p
            if sel.any():
                left = self._formula_stats(evaluate(s.formula, self.space.leaf), mask)
                est = estimates(self.kind, left, atoms, unit_area, self.size)
                out[sel] = est[cand.op[sel], cols[sel]]
        return out


    def select(self, old: list[Scored], cand: _Candidates, mask: UnitMask, beam: int,
               dedup: str) -> tuple[list[Scored], int]:
        """The next beam (exactly the exhaustive one) and the exact IoUs computed."""
        return pruned_select(old, cand, self.bounds(old, cand, mask), beam, dedup)


def pruned_select(old: list[Scored], cand: _Candidates, bounds: np.ndarray, beam: int,
                  dedup: str) -> tuple[list[Scored], int]:
    """CCE's scan: the exhaustive selection's result, and how many exact IoUs it needed."""
    kept: list[Scored] = []
    keys: list[tuple[object, ...]] = []

    def offer(s: Scored) -> None:
        tag = canonical_key(s.formula) if dedup == "equivalence" else s.formula
        key = _sort_key(s)
        for i, other in enumerate(kept):
            other_tag = canonical_key(other.formula) if dedup == "equivalence" else other.formula
            if other_tag == tag:
                if key < keys[i]:
                    del kept[i], keys[i]
                    break
                return
        pos = bisect.bisect(keys, key)
        kept.insert(pos, s)
        keys.insert(pos, key)
        del kept[beam:], keys[beam:]

    for s in sorted(old, key=_sort_key):
        offer(s)
    visited = 0
    for i in np.argsort(-bounds, kind="stable"):
        if len(kept) == beam and bounds[i] < kept[-1].iou - MARGIN:
            break
        visited += 1
        offer(cand.formula(int(i), old))
    return kept, visited
