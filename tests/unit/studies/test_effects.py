"""Which images contain a concept, and the sums of an intervention's effect, by hand."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.fake_dataset import FakeDataset, index_of

from ray_dissect.studies.effects import concept_presence, effect_sums, shares


@pytest.mark.parametrize("seed", [0, 3])
def test_presence_is_any_pixel_of_the_dense_labels(seed: int) -> None:
    """Image i contains label l iff a pixel has it (whole-image labels cover all pixels);
    label 0 (none) is never present and bad images contain nothing."""
    ds = FakeDataset(17, 8, seed)
    ds.bad = {4}
    index, _ = index_of(ds, 8, shard=5)
    labels = np.array([3, 0, 7, 1, 3])
    want = ds.dense(8).any(axis=2).T[:, labels]
    got = concept_presence(index, labels)
    assert got.shape == (17, 5) and (got == want).all() and not got[:, 1].any()


def test_effect_sums_split_images_by_concept() -> None:
    """Flips and probability drops of the unablated class, per subset."""
    base = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    after = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
    base_cls, after_cls = np.array([0, 1, 0]), np.array([1, 0, 0])
    present = np.array([True, False, True])
    sums = effect_sums(base, base_cls, after, after_cls, present)
    assert sums[0] == pytest.approx([3, 2, 0.5 + 0.1 + 0.1])
    assert sums[1] == pytest.approx([2, 1, 0.5 + 0.1])
    assert sums[2] == pytest.approx([1, 1, 0.1])
    assert (effect_sums(base, base_cls, after, after_cls, None)[1:] == 0).all()
    assert shares(sums[1]) == (2, 1, 0.5, pytest.approx(0.3))
    assert shares(np.zeros(3)) == (0, 0, None, None)
