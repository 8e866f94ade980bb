"""What an intervention does to a classifier's decisions, summed so that image shards add up.

Per image: whether the argmax class changed (a *flip*) and the drop p(c) - p'(c) of the
probability of the class c predicted without the intervention. Sums are kept per subset of
images (all of them, those that contain a concept, the others), so the shares of a whole
dataset are the sums over its shards divided at the end.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ray_dissect.concepts.index import ConceptIndex

SUBSETS = ("overall", "with_concept", "without_concept")
STATS = ("images", "flips", "probability_drop")


def concept_presence(index: ConceptIndex, labels: np.ndarray) -> np.ndarray:
    """Which images contain each of ``labels`` (any pixel; whole-image labels cover all).

    Args:
        index: the dataset's concept index.
        labels: (G,) int64 global label numbers; 0 means none (an all-False column).

    Returns:
        (N, G) bool.
    """
    per_image = sp.csr_matrix((index.image_counts, index.image_sets, index.image_indptr),
                              shape=(index.n_images, index.n_sets))
    counts = (per_image @ index.membership).tocsc()[:, np.asarray(labels, dtype=np.int64)]
    out = np.asarray(counts.todense()) > 0
    out[:, np.asarray(labels) == 0] = False
    return out


def effect_sums(base_probs: np.ndarray, base_classes: np.ndarray, probs: np.ndarray,
                classes: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    """Sums of one batch under one intervention, per subset.

    Args:
        base_probs: (n, K) float64 probabilities without the intervention; base_classes (n,)
            int64 their argmax.
        probs, classes: the same with the intervention.
        present: (n,) bool images that contain the concept, or None (no concept).

    Returns:
        (3, 3) float64: rows :data:`SUBSETS`, columns :data:`STATS` (images, flips, sum of
        probability drops); the concept rows are zero without a concept.
    """
    rows = np.arange(len(base_classes))
    flips = classes != base_classes
    drops = base_probs[rows, base_classes] - probs[rows, base_classes]
    out = np.zeros((len(SUBSETS), len(STATS)))
    keep = [np.ones(len(rows), dtype=bool)]
    if present is not None:
        keep += [present, ~present]
    for s, mask in enumerate(keep):
        out[s] = (mask.sum(), flips[mask].sum(), drops[mask].sum())
    return out


def shares(sums: np.ndarray) -> tuple[int, int, float | None, float | None]:
    """(images, flips, flip fraction, mean probability drop) from one subset's (3,) sums;
    the ratios are None without images."""
    images, flips, drop = int(sums[0]), int(sums[1]), float(sums[2])
    if images == 0:
        return images, flips, None, None
    return images, flips, flips / images, drop / images
