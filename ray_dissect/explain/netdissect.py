"""Network Dissection scores of every unit against every concept.

Given unit masks as label-set signatures (:mod:`ray_dissect.concepts.masks`), one sparse
product gives |B and L| for every concept L at once. Two IoU definitions:

- ``plain``: |B and L| / (|B| + |L| - |B and L|), dataset-wide (compexp, CCE); 0 when both
  are empty.
- ``category``: NetDissect-Lite's. The activation term of label L is the sum, over the
  categories L belongs to, of |B_x| over the images x where B touches a label of that category
  (whole-image labels touch whenever the unit fires in the image); ``+1e-10`` in the
  denominator as there. Multi-layer labels are counted once per pixel here (NetDissect-Lite
  counts a label present in two layers of one pixel twice).

The best label of a unit is the argmax over all labels (ties to the lower number), which is the
best of the per-category bests; per category, the argmax among labels whose primary category
it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.concepts.masks import UnitMask


@dataclass(frozen=True)
class Tally:
    """Counts of k units against all labels.

    Attributes:
        inter: (k, n_labels) float64, |B_u and L|.
        area: (k,) float64, |B_u|.
        label_area: (n_labels,) float64, |L|.
        activation: (k, n_labels) float64, the IoU's activation term (|B_u| for ``plain``).
        scores: (k, n_labels) float64 scores that replace the pooled IoU (the per-image
            rule's mean IoU, :func:`per_image_iou`), or None.
    """

    inter: np.ndarray
    area: np.ndarray
    label_area: np.ndarray
    activation: np.ndarray
    scores: np.ndarray | None = None

    def iou(self, eps: float) -> np.ndarray:
        """(k, n_labels) float64 IoU (``scores`` when set); ``eps`` is added to the pooled
        IoU's denominator (0 maps 0/0 to 0)."""
        if self.scores is not None:
            return self.scores
        union = self.activation + self.label_area[None, :] - self.inter + eps
        with np.errstate(invalid="ignore", divide="ignore"):
            out = self.inter / union
        return np.where(union > 0, out, 0.0)


def _set_counts(masks: Sequence[UnitMask], n_sets: int) -> sp.csr_matrix:
    """(k, n_sets) sparse pixel counts of each unit mask per label set."""
    rows = np.concatenate([np.full(len(m.sets), u) for u, m in enumerate(masks)] or [np.zeros(0)])
    sets = np.concatenate([m.sets for m in masks] or [np.zeros(0)]).astype(np.int64)
    counts = np.concatenate([m.counts for m in masks] or [np.zeros(0)]).astype(np.float64)
    return sp.csr_matrix((counts, (rows.astype(np.int64), sets)), shape=(len(masks), n_sets))


def _category_activation(masks: Sequence[UnitMask], index: ConceptIndex) -> np.ndarray:
    """(k, n_labels) NetDissect-Lite activation term (see module docstring)."""
    labelcat = index.vocab.membership.astype(np.float64)
    setcat = (index.membership @ labelcat) > 0
    unit_cat = np.zeros((len(masks), labelcat.shape[1]))
    for u, mask in enumerate(masks):
        if not len(mask.images):
            continue
        images, inverse = np.unique(mask.images, return_inverse=True)
        touched = np.zeros((len(images), labelcat.shape[1]), dtype=bool)
        np.logical_or.at(touched, inverse, setcat[mask.sets])
        area_x = np.bincount(inverse, weights=mask.counts, minlength=len(images))
        unit_cat[u] = area_x @ touched
    return unit_cat @ labelcat.T


def tally(masks: Sequence[UnitMask], index: ConceptIndex,
          denominator: Literal["plain", "category"] = "plain") -> Tally:
    """Count every unit mask against every concept of the index (valid images only)."""
    inter = np.asarray((_set_counts(masks, index.n_sets) @ index.membership).todense())
    area = np.array([m.area for m in masks], dtype=np.float64)
    label_area = index.label_area()
    if denominator == "plain":
        activation = np.broadcast_to(area[:, None], inter.shape)
    else:
        activation = _category_activation(masks, index)
    return Tally(inter, area, label_area, np.asarray(activation, dtype=np.float64))


def per_image_iou(masks: Sequence[UnitMask], index: ConceptIndex) -> np.ndarray:
    """inner-detectors' score: the mean over images containing L of |B_x and L_x| / |B_x or L_x|
    (0 when both are empty), over the index's valid images.

    Returns:
        (k, n_labels) float64; 0 for a label in no valid image.
    """
    n = index.n_images
    per_image = sp.csr_matrix((index.image_counts.astype(np.float64),
                               (np.repeat(np.arange(n), np.diff(index.image_indptr)),
                                index.image_sets)), shape=(n, index.n_sets))
    label_x = np.asarray((per_image @ index.membership).todense())  # (N, n_labels) |L_x|
    contains = (label_x > 0) & index.valid[:, None]
    images = np.maximum(contains.sum(axis=0), 1)
    out = np.zeros((len(masks), label_x.shape[1]))
    for u, mask in enumerate(masks):
        hits = sp.csr_matrix((mask.counts.astype(np.float64), (mask.images, mask.sets)),
                             shape=(n, index.n_sets))
        inter = np.asarray((hits @ index.membership).todense())
        area_x = np.bincount(mask.images, weights=mask.counts, minlength=n)[:, None]
        union = area_x + label_x - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        out[u] = np.where(contains, iou, 0.0).sum(axis=0) / images
    return out


@dataclass(frozen=True)
class UnitLabels:
    """The labelling of one unit: best label overall, best per category, top-k labels.

    ``best`` and each entry are (label number, IoU); label 0 means no label had IoU > 0.
    """

    best: tuple[int, float]
    per_category: dict[str, tuple[int, float]]
    top: tuple[tuple[int, float], ...]


def label_units(iou: np.ndarray, index: ConceptIndex, top_k: int) -> list[UnitLabels]:
    """Pick labels from a (k, n_labels) IoU matrix."""
    vocab = index.vocab
    known = vocab.primary >= 0
    scores = np.where(known[None, :], iou, -1.0)
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:top_k]
        top = tuple((int(j), float(row[j])) for j in order if row[j] > 0)
        per_cat = {}
        for ci, cat in enumerate(vocab.categories):
            in_cat = vocab.primary == ci
            if in_cat.any():
                j = int(np.flatnonzero(in_cat)[np.argmax(row[in_cat])])
                per_cat[cat] = (j, float(max(row[j], 0.0)))
        best = top[0] if top else (0, 0.0)
        out.append(UnitLabels(best, per_cat, top))
    return out
