"""Explanation metrics against values counted by hand on a 4-image, 1 x 4-pixel dataset.

Labels per pixel (0 = none) and the unit mask B::

    image   labels        B
    0       1 1 2 0       1 0 1 0
    1       2 2 1 0       1 0 0 1
    2       0 0 0 2       0 0 0 0
    3       1 0 0 0       1 0 0 0
"""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.fake_dataset import vocab

from ray_dissect.concepts.index import build_shard, merge_shards
from ray_dissect.concepts.masks import unit_masks
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.explain.formula import Leaf, Or, evaluate
from ray_dissect.explain.metrics import explanation_metrics
from ray_dissect.explain.search import SearchSpace

LABELS = np.array([[1, 1, 2, 0], [2, 2, 1, 0], [0, 0, 0, 2], [1, 0, 0, 0]], dtype=np.int32)
UNIT = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32)


class HandDataset:
    """The table above; images in ``bad`` cannot be read."""

    mask_shape = (1, 4)

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return len(LABELS)

    def read_labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i in self.bad:
            raise BadSampleError(f"bad {i}")
        return LABELS[i][None, None, :], np.zeros(0, np.int32)


def _metrics(formula: Leaf | Or, bad: frozenset[int] = frozenset()):
    ds = HandDataset(bad)
    shard = build_shard(ds, 0, len(ds))
    index = merge_shards(vocab(3), ds.mask_shape, len(ds), [shard])
    ids = index.global_set_ids(shard.set_ids, 0)
    acts = UNIT[:, None, None, :]  # (4, 1 unit, 1, 4): already at mask resolution
    mask = unit_masks(acts, np.array([0.5]), np.array([np.inf]), ids, 0, index.valid)[0]
    space = SearchSpace.from_index(index)
    return explanation_metrics(mask, evaluate(formula, space.leaf), space)


def test_single_concept_metrics_are_the_hand_counts() -> None:
    """L = label 2: |B| 5, |L| 4, |B and L| 2; images with L {0,1,2}, with both {0,1},
    with B {0,1,3}."""
    m = _metrics(Leaf(2))
    assert m.iou == pytest.approx(2 / 7)
    assert m.activation_coverage == pytest.approx(2 / 5)
    assert m.detection_accuracy == pytest.approx(2 / 4)
    assert m.samples_coverage == pytest.approx(2 / 3)
    assert m.explanation_coverage == pytest.approx(2 / 3)


def test_formula_metrics_are_the_hand_counts() -> None:
    """L = 1 OR 2: |L| 8, |B and L| 4; images with L {0,1,2,3}, with both {0,1,3}."""
    m = _metrics(Or(Leaf(1), Leaf(2)))
    assert m.iou == pytest.approx(4 / 9)
    assert m.activation_coverage == pytest.approx(4 / 5)
    assert m.detection_accuracy == pytest.approx(4 / 8)
    assert m.samples_coverage == pytest.approx(3 / 4)
    assert m.explanation_coverage == pytest.approx(3 / 3)


def test_invalid_images_count_nowhere() -> None:
    """With image 1 unreadable: |B| 3, |L| 2, |B and L| 1; L in {0,2}, both {0}, B {0,3}."""
    m = _metrics(Leaf(2), bad=frozenset({1}))
    assert m.iou == pytest.approx(1 / 4)
    assert m.activation_coverage == pytest.approx(1 / 3)
    assert m.detection_accuracy == pytest.approx(1 / 2)
    assert m.samples_coverage == pytest.approx(1 / 2)
    assert m.explanation_coverage == pytest.approx(1 / 2)


def test_empty_denominators_give_zero() -> None:
    """A concept nowhere in the data (label 0's empty set) gives 0 everywhere, not NaN."""
    m = _metrics(Leaf(0))
    assert (m.iou, m.detection_accuracy, m.samples_coverage) == (0.0, 0.0, 0.0)
