"""The label-set concept index gives exactly the dense counts."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.fake_dataset import FakeDataset, index_of

from ray_dissect.concepts.index import (
    canonical_label_rows,
    load_index,
    pixel_label_sets,
    save_index,
    unique_rows,
)


def test_canonical_rows_merge_duplicates_and_whole_labels() -> None:
    """Equal label sets give equal rows whatever the layer order; 0 and repeats vanish."""
    pixel = np.array([[[3, 0]], [[3, 5]]], dtype=np.int32)  # 2 layers, 1x2 pixels
    rows = canonical_label_rows(pixel, np.array([7], np.int32), width=4)
    assert rows.tolist() == [[0, 0, 3, 7], [0, 0, 5, 7]]
    swapped = canonical_label_rows(pixel[::-1].copy(), np.array([7], np.int32), width=4)
    assert np.array_equal(rows, swapped)


@pytest.mark.parametrize(("layers", "whole", "seed"), [(3, 2, 0), (2, 0, 1), (0, 1, 2), (4, 3, 3)])
def test_pixel_label_sets_equal_the_per_pixel_rows(layers: int, whole: int, seed: int) -> None:
    """Canonicalising the distinct layer tuples gives the per-pixel path's sets, order, pixel
    rows and counts, with labels repeated across layers and whole-image labels among them."""
    rng = np.random.default_rng(seed)
    pixel = rng.integers(0, 6, size=(layers, 17, 13)).astype(np.int32)
    labels = rng.integers(1, 8, size=whole).astype(np.int32)
    width = layers + whole + 1
    want = unique_rows(canonical_label_rows(pixel, labels, width))
    got = pixel_label_sets(pixel, labels, width)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_area_equals_dense_counts(seed: int) -> None:
    """|L| from the index equals the dense pixel count of every label, across shards."""
    n_labels = 9
    ds = FakeDataset(23, n_labels, seed)
    index, _ = index_of(ds, n_labels, shard=5)
    dense = ds.dense(n_labels)
    np.testing.assert_array_equal(index.label_area(), dense.sum(axis=(1, 2)))


def test_set_ids_reproduce_every_pixel_label_set() -> None:
    """Looking up a pixel's set id in the membership matrix gives back its label set."""
    n_labels = 7
    ds = FakeDataset(12, n_labels, seed=5)
    index, shards = index_of(ds, n_labels, shard=4)
    dense = ds.dense(n_labels)
    local = np.concatenate([s.set_ids for s in shards])
    ids = index.global_set_ids(local, 0).reshape(len(ds), -1)
    member = index.membership.toarray().astype(bool)
    np.testing.assert_array_equal(member[ids].transpose(2, 0, 1), dense)
    picked = np.array([1, 5, 6, 11])  # scattered images, across shards
    got = index.global_set_ids_at(local[picked], picked).reshape(len(picked), -1)
    np.testing.assert_array_equal(got, ids[picked])
    for start in (0, 4, 8, 9):  # one shard's images: looked up in that shard's table slice
        stop = min(start + 4 - start % 4, len(ds))
        one = index.global_set_ids(local[start:stop], start)
        assert one.dtype == np.int64
        np.testing.assert_array_equal(one.reshape(stop - start, -1), ids[start:stop])


def test_bad_sample_is_recorded_and_left_out(tmp_path) -> None:
    """An unreadable sample becomes invalid, with its reason, and counts nowhere."""
    n_labels = 6
    ds = FakeDataset(8, n_labels, seed=3)
    ds.bad = {2}
    index, shards = index_of(ds, n_labels, shard=4)
    assert shards[0].errors == ((2, "bad 2"),)
    assert index.valid.tolist() == [True, True, False] + [True] * 5
    np.testing.assert_array_equal(index.label_area(), ds.dense(n_labels).sum(axis=(1, 2)))
    save_index(index, tmp_path / "i.npz")
    back = load_index(tmp_path / "i.npz", index.vocab)
    np.testing.assert_array_equal(back.label_area(), index.label_area())
    assert back.n_sets == index.n_sets and back.shard_images == 4


def test_unique_rows_is_exact_even_when_keys_collide(monkeypatch) -> None:
    """Row grouping is verified: forced key collisions fall back to the exact path."""
    import ray_dissect.concepts.index as concepts

    rows = np.sort(np.random.default_rng(0).integers(0, 4, size=(300, 3)), axis=1)
    uniq, inverse, counts = concepts.unique_rows(rows.astype(np.int32))
    assert np.array_equal(uniq[inverse], rows) and counts.sum() == 300
    monkeypatch.setattr(concepts, "_MIX", np.zeros(8, dtype=np.uint64))
    uniq2, inverse2, counts2 = concepts.unique_rows(rows.astype(np.int32))
    assert np.array_equal(uniq2[inverse2], rows) and len(uniq2) == len(uniq)
    assert sorted(counts2.tolist()) == sorted(counts.tolist())
    assert counts2.tolist() == counts.tolist() or sorted(counts2) == sorted(counts)


@pytest.mark.parametrize(("n", "width", "run"), [(0, 3, 1), (1, 1, 1), (500, 1, 7),
                                                 (3000, 5, 40), (4096, 2, 1)])
def test_unique_rows_match_grouping_every_rows_key(n: int, width: int, run: int) -> None:
    """Merging runs of equal keys before sorting, and working column-wise, changes nothing:
    the same unique rows in the same (key) order, inverse and counts as sorting the
    row-summed key of every row, as the code did before."""
    import ray_dissect.concepts.index as concepts

    rng = np.random.default_rng(n + width)
    rows = np.repeat(rng.integers(0, 5, size=(-(-n // run), width)), run, axis=0)[:n]
    rows = rows.astype(np.int32)
    mix = np.resize(concepts._MIX, width) + np.arange(width, dtype=np.uint64) * np.uint64(2)
    with np.errstate(over="ignore"):
        keys = (rows.astype(np.uint64) * mix).sum(axis=1, dtype=np.uint64)
        keys ^= keys >> np.uint64(29)
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True,
                                          return_counts=True)
    uniq, got_inverse, got_counts = concepts.unique_rows(rows)
    assert uniq.flags.c_contiguous and uniq.dtype == np.int32
    np.testing.assert_array_equal(uniq, rows[first].reshape(-1, width))
    np.testing.assert_array_equal(got_inverse, inverse.reshape(-1))
    np.testing.assert_array_equal(got_counts, counts)


def test_identical_label_sets_share_one_id_across_shards() -> None:
    """The merged index has one set per distinct label combination in the whole dataset."""
    n_labels = 5
    ds = FakeDataset(30, n_labels, seed=11)
    index, shards = index_of(ds, n_labels, shard=3)
    dense = ds.dense(n_labels).reshape(n_labels, -1).T
    distinct = {tuple(row) for row in dense}
    assert index.n_sets == len(distinct) + (0 if (False,) * n_labels in distinct else 1)
    assert index.n_sets < sum(len(s.set_indptr) - 1 for s in shards)


def _first_occurrence_reference(shards) -> tuple[list[int], list[tuple[int, ...]]]:
    """Global ids by a plain dict over the shards' sets, in order of first occurrence."""
    table: dict[tuple[int, ...], int] = {}
    remap = []
    for s in shards:
        for k in range(len(s.set_indptr) - 1):
            key = tuple(int(x) for x in s.set_labels[s.set_indptr[k]:s.set_indptr[k + 1]])
            remap.append(table.setdefault(key, len(table)))
    return remap, list(table)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_merged_set_ids_are_first_occurrence_order(seed: int) -> None:
    """Identical sets across shards share one id, numbered in order of first occurrence."""
    n_labels = 6 + seed
    ds = FakeDataset(40, n_labels, seed, shape=(3, 4))
    index, shards = index_of(ds, n_labels, shard=7)
    remap, sets = _first_occurrence_reference(shards)
    assert index.remap.tolist() == remap and index.n_sets == len(sets) < len(remap)
    m = index.membership.tocsr()
    got = [tuple(int(x) for x in m.indices[m.indptr[g]:m.indptr[g + 1]]) for g in range(len(sets))]
    assert got == sets and sets[0] == ()  # local id 0 of every shard is the empty set
