"""NetDissect scores: hand-computed on the 4-image fixture, and equal to dense counts."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fixtures.hand import HAND_CATEGORY, HAND_PLAIN

from ray_dissect.concepts.index import build_shard, merge_shards
from ray_dissect.concepts.masks import unit_masks
from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.explain.netdissect import label_units, tally
from ray_dissect.models.extract import Extractor
from ray_dissect.spec import DatasetSpec, ModelSpec, PreprocessSpec
from ray_dissect.units.thresholds import unit_thresholds

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")



def fixture_tally(root: Path, denominator: str):
    ds = BrodenDataset(DatasetSpec(root=str(root)))
    index = merge_shards(ds.vocab, ds.mask_shape, 4, [build_shard(ds, 0, 4)])
    model = ModelSpec(factory=f"{PLANTED}:red_channel",
                      preprocess=PreprocessSpec(size=8, mean=(0, 0, 0), std=(1, 1, 1)))
    acts = Extractor(model, ["pool"])([ds.read_image(i) for i in range(4)])["pool"]
    thresholds, _ = unit_thresholds(acts, 0.1)
    ids = index.global_set_ids(np.stack([build_shard(ds, 0, 4).set_ids])[0], 0)
    masks = unit_masks(acts, thresholds, np.full(1, np.inf), ids, 0, index.valid)
    return ds, index, tally(masks, index, denominator)


@pytest.mark.parametrize(("denominator", "hand", "eps"),
                         [("plain", HAND_PLAIN, 0.0), ("category", HAND_CATEGORY, 1e-10)])
def test_four_image_fixture_hand_computed(four_images: Path, denominator: str,
                                          hand: dict[str, Fraction], eps: float) -> None:
    """Every IoU equals its hand-computed fraction to 1e-9."""
    ds, index, result = fixture_tally(four_images, denominator)
    assert result.area.tolist() == [7.0]
    iou = result.iou(eps)[0]
    for number, name in enumerate(ds.vocab.names):
        if name:
            assert abs(iou[number] - float(hand[name])) < 1e-9, name
    labels = label_units(result.iou(eps), index, top_k=3)[0]
    assert ds.vocab.names[labels.best[0]] == "red"
    assert {c: ds.vocab.names[n] for c, (n, _) in labels.per_category.items()}["scene"] == "kitchen"
    assert ds.vocab.names[labels.top[0][0]] == "red"


def test_tally_equals_dense_iou() -> None:
    """On random masks and labels, tally's plain IoU equals a dense computation."""
    from fixtures.fake_dataset import FakeDataset
    from fixtures.fake_dataset import index_of as _index

    n_labels = 8
    ds = FakeDataset(14, n_labels, seed=9)
    index, shards = _index(ds, n_labels, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    rng = np.random.default_rng(4)
    acts = rng.normal(size=(14, 2, *ds.mask_shape)).astype(np.float32)
    lo = np.array([0.8, 1.2])
    masks = unit_masks(acts, lo, np.full(2, np.inf), ids, 0, index.valid)
    got = tally(masks, index).iou(0.0)
    dense = ds.dense(n_labels).reshape(n_labels, -1)
    for u in range(2):
        b = (acts[:, u] > lo[u]).reshape(-1)
        inter = (dense & b).sum(axis=1)
        union = (dense | b).sum(axis=1)
        want = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        np.testing.assert_allclose(got[u], want, rtol=0, atol=1e-12)
