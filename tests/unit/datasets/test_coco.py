"""The COCO reader's masks equal pycocotools' annToMask on COCO files written by the test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures.coco import (
    CATEGORIES,
    IMAGES,
    PAN_IMAGES,
    PAN_SEGMENTS,
    CocoFixture,
    PanopticFixture,
    S,
    box_mask,
    compressed_rle,
    rect,
    write_coco,
    write_id_png,
    write_images,
    write_json,
    write_panoptic,
)
from fixtures.s3 import LocalS3
from PIL import Image
from pydantic import ValidationError

from ray_dissect.concepts.index import build_shard, merge_shards
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.datasets.coco import CocoDataset, nearest_indices, paint_layers
from ray_dissect.datasets.coco_panoptic import masks_dir
from ray_dissect.datasets.registry import open_dataset
from ray_dissect.errors import DatasetError, SpecError
from ray_dissect.spec import CocoDatasetSpec, parse_spec

# pycocotools' Cython decode (used by the annToMask oracle) trips a numpy 2 warning
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SUPERS = {"person (super)": ("person",), "vehicle": ("car",), "animal": ("cat", "dog")}


@pytest.fixture
def coco(tmp_path: Path) -> CocoFixture:
    return write_coco(tmp_path / "coco")


def _spec(fix: CocoFixture, **kw: object) -> CocoDatasetSpec:
    kw.setdefault("mask_size", S)
    return CocoDatasetSpec(root=str(fix.images), annotations=str(fix.instances), **kw)


def _oracle(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """image id -> category name -> union of pycocotools annToMask (bool, native size)."""
    from pycocotools.coco import COCO

    api = COCO(str(path))
    out: dict[int, dict[str, np.ndarray]] = {}
    for image_id, info in api.imgs.items():
        masks = {c["name"]: np.zeros((info["height"], info["width"]), dtype=bool)
                 for c in api.cats.values()}
        for ann in api.imgToAnns[image_id]:
            masks[api.cats[ann["category_id"]]["name"]] |= api.annToMask(ann).astype(bool)
        out[image_id] = masks
    return out


def _with_supers(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(masks)
    for sup, members in SUPERS.items():
        out[sup] = np.logical_or.reduce([masks[m] for m in members])
    return out


def _reference_resize(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest neighbour at pixel centres, written independently with floats."""
    rows = np.floor((np.arange(size) + 0.5) * mask.shape[0] / size).astype(int)
    cols = np.floor((np.arange(size) + 0.5) * mask.shape[1] / size).astype(int)
    return mask[rows][:, cols]


def _check_against(ds: CocoDataset, expected: dict[int, dict[str, np.ndarray]],
                   size: int) -> None:
    number = {name: n for n, name in enumerate(ds.vocab.names) if n}
    for i, image_id in enumerate(ds.image_ids):
        pixel, whole = ds.read_labels(i)
        assert pixel.dtype == np.int32 and pixel.shape[1:] == (size, size)
        assert whole.shape == (0,) and whole.dtype == np.int32
        for name, dense in expected[image_id].items():
            got = (pixel == number[name]).sum(axis=0)
            assert got.max(initial=0) <= 1, f"{name} twice on one pixel"
            np.testing.assert_array_equal(got.astype(bool), _reference_resize(dense, size),
                                          err_msg=f"image {image_id}, {name}")


class TestMasks:
    def test_full_size_masks_equal_ann_to_mask(self, coco: CocoFixture) -> None:
        """mask_size = image size: every object and supercategory mask equals annToMask."""
        ds = CocoDataset(_spec(coco))
        oracle = {k: _with_supers(v) for k, v in _oracle(coco.instances).items()}
        _check_against(ds, oracle, S)
        # the fixture really has overlapping instances of two categories
        assert (oracle[1]["person"] & oracle[1]["dog"]).any()
        assert (oracle[1]["cat"] & oracle[1]["dog"]).any()
        assert ds.read_labels(0)[0].shape[0] >= 4  # person, dog, + their supercategories

    def test_image_without_annotations_is_kept_unlabeled(self, coco: CocoFixture) -> None:
        """Image id 5 has no annotation: kept, zero layers."""
        ds = CocoDataset(_spec(coco))
        i = ds.image_ids.index(5)
        assert ds.samples[i].image == "empty.png"
        assert ds.read_labels(i)[0].shape == (0, S, S)

    def test_resized_masks(self, coco: CocoFixture) -> None:
        """mask_size < image size: annToMask then nearest-neighbour sampling at centres."""
        oracle = {k: _with_supers(v) for k, v in _oracle(coco.instances).items()}
        _check_against(CocoDataset(_spec(coco, mask_size=6)), oracle, 6)

    def test_non_square_resize(self, tmp_path: Path) -> None:
        """A 12x20 image sampled to 5x5 (rows and columns scale differently)."""
        images = [{"id": 1, "file_name": "w.png", "height": 12, "width": 20}]
        cats = [{"id": 1, "name": "box", "supercategory": "thing"}]
        anns = [{"image_id": 1, "category_id": 1, "segmentation": [[1, 1, 18, 2, 9, 11]]},
                {"image_id": 1, "category_id": 1, "iscrowd": 1,
                 "segmentation": compressed_rle(box_mask(12, 20, 6, 12, 13, 20))}]
        write_images(tmp_path / "img", images)
        path = write_json(tmp_path / "i.json", images, cats, anns)
        spec = CocoDatasetSpec(root=str(tmp_path / "img"), annotations=str(path), mask_size=5)
        ds = CocoDataset(spec)
        box = _oracle(path)[1]["box"]
        pixel, _ = ds.read_labels(0)
        np.testing.assert_array_equal((pixel == 1).any(axis=0), _reference_resize(box, 5))
        np.testing.assert_array_equal((pixel == 2).any(axis=0), _reference_resize(box, 5))

    def test_nearest_indices_and_layering(self) -> None:
        """Centre sampling of 16 -> 6; greedy layers hold each label once per pixel."""
        assert nearest_indices(16, 6).tolist() == [1, 4, 6, 9, 12, 14]
        assert nearest_indices(4, 8).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
        a = np.array([[1, 1, 0]], dtype=bool)
        b = np.array([[0, 1, 1]], dtype=bool)
        pixel = paint_layers({3: a, 9: b}, (1, 3))
        np.testing.assert_array_equal(pixel, [[[3, 3, 9]], [[0, 9, 0]]])
        assert paint_layers({}, (2, 2)).shape == (0, 2, 2)


class TestVocabulary:
    def test_numbering_categories_primary(self, coco: CocoFixture) -> None:
        """Objects by ascending COCO id, then supercategories by first appearance."""
        v = CocoDataset(_spec(coco)).vocab
        assert v.names == ("", "person", "car", "cat", "dog", "person (super)", "vehicle",
                           "animal")
        assert v.categories == ("object", "supercategory")
        assert [v.category_of(n) for n in range(v.size)] == \
            ["", *["object"] * 4, *["supercategory"] * 3]
        assert v.membership.shape == (8, 2) and v.membership.sum(axis=1).tolist() == \
            [0, *[1] * 7]

    def test_category_filter(self, coco: CocoFixture) -> None:
        """categories=("object",): numbers unchanged, supercategories unlisted and unpainted."""
        ds = CocoDataset(_spec(coco, categories=("object",)))
        assert ds.vocab.categories == ("object",) and ds.vocab.size == 8
        assert ds.vocab.primary.tolist() == [-1, 0, 0, 0, 0, -1, -1, -1]
        labels = set().union(*(np.unique(ds.read_labels(i)[0]).tolist()
                               for i in range(len(ds))))
        assert labels == {0, 1, 2, 3, 4}
        sup = CocoDataset(_spec(coco, categories=("supercategory",)))
        assert set(np.unique(sup.read_labels(0)[0]).tolist()) == {0, 5, 6, 7}

    def test_bad_category_filters(self, coco: CocoFixture) -> None:
        with pytest.raises(DatasetError, match="unknown categories"):
            CocoDataset(_spec(coco, categories=("part",)))
        with pytest.raises(DatasetError, match="stuff"):
            CocoDataset(_spec(coco, categories=("stuff",)))

    def test_limit_keeps_lowest_image_ids(self, coco: CocoFixture) -> None:
        ds = CocoDataset(_spec(coco, limit=2))
        assert ds.image_ids == (1, 3) and [s.image for s in ds.samples] == ["a.png", "b.png"]
        assert len(CocoDataset(_spec(coco))) == 4
        assert ds.samples[0].image_size == (S, S) and ds.mask_shape == (S, S)

    def test_stuff_labels(self, coco: CocoFixture) -> None:
        """A stuff JSON adds "stuff" labels (and their supercategories) with annToMask masks."""
        ds = CocoDataset(_spec(coco, stuff=str(coco.stuff)))
        v = ds.vocab
        assert v.names == ("", "person", "car", "cat", "dog", "grass", "other",
                           "person (super)", "vehicle", "animal", "plant", "other (super)")
        assert v.categories == ("object", "stuff", "supercategory")
        assert [v.category_of(n) for n in (4, 5, 6, 7, 11)] == \
            ["object", "stuff", "stuff", "supercategory", "supercategory"]
        stuff = _oracle(coco.stuff)
        expected = {k: {**_with_supers(m), **stuff[k], "plant": stuff[k]["grass"],
                        "other (super)": stuff[k]["other"]}
                    for k, m in _oracle(coco.instances).items()}
        _check_against(ds, expected, S)
        assert ds.read_labels(ds.image_ids.index(5))[0].shape[0] == 2  # grass + plant

    def test_stuff_name_clash_is_suffixed(self, coco: CocoFixture, tmp_path: Path) -> None:
        path = write_json(tmp_path / "s.json", IMAGES,
                          [{"id": 90, "name": "dog", "supercategory": "animal"}], [])
        v = CocoDataset(_spec(coco, stuff=str(path))).vocab
        assert v.names[5] == "dog (stuff)" and "animal" in v.names
        assert len(set(v.names)) == len(v.names)

    def test_open_dataset_dispatches(self, coco: CocoFixture) -> None:
        assert isinstance(open_dataset(_spec(coco)), CocoDataset)


class TestErrors:
    def test_missing_paths(self, coco: CocoFixture, tmp_path: Path) -> None:
        with pytest.raises(DatasetError, match="root is not a directory"):
            CocoDataset(CocoDatasetSpec(root=str(tmp_path / "nope"),
                                        annotations=str(coco.instances)))
        with pytest.raises(DatasetError, match="annotations file not found"):
            CocoDataset(CocoDatasetSpec(root=str(coco.images),
                                        annotations=str(tmp_path / "no.json")))
        with pytest.raises(DatasetError, match="stuff file not found"):
            CocoDataset(_spec(coco, stuff=str(tmp_path / "no.json")))

    @pytest.mark.parametrize("text", ["{not json", '{"images": []}', "[1, 2]",
                                      '{"images": [{"id": 1}], "categories": []}'])
    def test_malformed_json(self, coco: CocoFixture, tmp_path: Path, text: str) -> None:
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(DatasetError, match="JSON") as info:
            CocoDataset(CocoDatasetSpec(root=str(coco.images), annotations=str(bad)))
        assert "\n" not in str(info.value)

    def test_unknown_category_id_and_no_images(self, coco: CocoFixture, tmp_path: Path) -> None:
        anns = [{"image_id": 1, "category_id": 99, "segmentation": [rect(0, 0, 2, 2)]}]
        path = write_json(tmp_path / "u.json", IMAGES, CATEGORIES, anns)
        with pytest.raises(DatasetError, match="unknown category_id 99"):
            CocoDataset(CocoDatasetSpec(root=str(coco.images), annotations=str(path)))
        empty = write_json(tmp_path / "e.json", [], CATEGORIES, [])
        with pytest.raises(DatasetError, match="no images"):
            CocoDataset(CocoDatasetSpec(root=str(coco.images), annotations=str(empty)))

    def test_wrong_size_rle_is_a_bad_sample(self, coco: CocoFixture, tmp_path: Path) -> None:
        """An RLE of another size fails that image only; build_shard records it."""
        anns = [{"image_id": 3, "category_id": 1,
                 "segmentation": compressed_rle(box_mask(8, 8, 0, 2, 0, 2))}]
        path = write_json(tmp_path / "w.json", IMAGES, CATEGORIES, anns)
        ds = CocoDataset(CocoDatasetSpec(root=str(coco.images), annotations=str(path)))
        with pytest.raises(BadSampleError, match=r"b\.png: segmentation is 8x8"):
            ds.read_labels(1)
        shard = build_shard(ds, 0, len(ds))
        assert shard.valid.tolist() == [True, False, True, True]


class TestImages:
    def test_rgb_gray_and_16_bit(self, coco: CocoFixture) -> None:
        ds = CocoDataset(_spec(coco))
        img = ds.read_image(0)
        assert img.shape == (S, S, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, np.asarray(Image.open(coco.images / "a.png")))
        Image.fromarray(np.full((S, S), 77, np.uint8)).save(coco.images / "b.png")
        assert (ds.read_image(1) == 77).all() and ds.read_image(1).shape == (S, S, 3)
        Image.fromarray(np.full((S, S), 65535, np.uint16)).save(coco.images / "c.png")
        assert (ds.read_image(3) == 255).all()

    def test_unreadable_and_missing_images(self, coco: CocoFixture) -> None:
        ds = CocoDataset(_spec(coco))
        (coco.images / "a.png").write_bytes(b"not an image")
        with pytest.raises(BadSampleError, match=r"unreadable image a\.png"):
            ds.read_image(0)
        (coco.images / "b.png").unlink()
        with pytest.raises(BadSampleError, match=r"unreadable image b\.png"):
            ds.read_image(1)

    def test_encoded_bytes_are_the_file(self, coco: CocoFixture) -> None:
        """read_image_bytes hands out the file as stored; a missing one is a bad sample."""
        ds = CocoDataset(_spec(coco))
        assert ds.read_image_bytes(0) == (coco.images / "a.png").read_bytes()
        (coco.images / "b.png").unlink()
        with pytest.raises(BadSampleError, match=r"unreadable image b\.png"):
            ds.read_image_bytes(1)


@pytest.mark.parametrize("stuff", [False, True])
def test_concept_index_label_area_equals_dense_counts(coco: CocoFixture, stuff: bool) -> None:
    """End to end without Ray: build_shard + merge_shards count what annToMask says."""
    ds = CocoDataset(_spec(coco, mask_size=6, stuff=str(coco.stuff) if stuff else None))
    shards = [build_shard(ds, 0, 2), build_shard(ds, 2, 4)]
    index = merge_shards(ds.vocab, ds.mask_shape, 2, shards)
    number = {name: n for n, name in enumerate(ds.vocab.names)}
    dense = np.zeros(ds.vocab.size)
    masks = _oracle(coco.instances)
    extra = _oracle(coco.stuff) if stuff else {}
    for image_id, by_cat in masks.items():
        by_cat = _with_supers(by_cat)
        if stuff:
            by_cat |= {**extra[image_id], "plant": extra[image_id]["grass"],
                       "other (super)": extra[image_id]["other"]}
        for name, m in by_cat.items():
            dense[number[name]] += _reference_resize(m, 6).sum()
    assert dense[number["animal"]] > 0
    np.testing.assert_array_equal(index.label_area(), dense)
    assert index.valid.all() and index.n_images == 4


def test_json_is_read_once_per_process(coco: CocoFixture) -> None:
    """Two datasets over one unchanged file share the parsed JSON; a rewrite is re-read."""
    a, b = CocoDataset(_spec(coco)), CocoDataset(_spec(coco))
    assert a._files[0] is b._files[0]
    raw = json.loads(coco.instances.read_text())
    raw["images"] = raw["images"][:1]
    coco.instances.write_text(json.dumps(raw))
    assert len(CocoDataset(_spec(coco))) == 1


def test_coco_on_s3_equals_local(coco: CocoFixture, local_s3: LocalS3) -> None:
    """Annotations and images read through s3:// give the local masks; a rewrite is re-read."""
    uri = local_s3.upload(coco.images.parent, local_s3.bucket("coco") + "/val")
    remote = CocoDataset(CocoDatasetSpec(root=f"{uri}/images",
                                         annotations=f"{uri}/instances.json", mask_size=S))
    local = CocoDataset(_spec(coco))
    assert remote.samples == local.samples and remote.vocab.names == local.vocab.names
    for i in range(len(local)):
        assert np.array_equal(remote.read_image(i), local.read_image(i))
        assert np.array_equal(remote.read_labels(i)[0], local.read_labels(i)[0])
    raw = json.loads(coco.instances.read_text())
    raw["images"] = raw["images"][:1]
    local_s3.fs.pipe_file(f"{uri}/instances.json"[5:], json.dumps(raw).encode())
    assert len(CocoDataset(CocoDatasetSpec(root=f"{uri}/images",
                                           annotations=f"{uri}/instances.json"))) == 1
    with pytest.raises(DatasetError, match=r"dataset\.annotations file not found"):
        CocoDataset(CocoDatasetSpec(root=f"{uri}/images", annotations=f"{uri}/nope.json"))


# --- panoptic --------------------------------------------------------------------------------

PAN_NAMES = {1: "person", 3: "car", 18: "dog", 149: "road", 184: "tree-merged",
             190: "dog (stuff)", 193: "grass-merged"}  # written by hand from the fixture
PAN_SUPERS = {"person (super)": (1,), "vehicle": (3,), "animal": (18, 190), "ground": (149,),
              "plant": (184, 193)}


@pytest.fixture
def pan(tmp_path: Path) -> PanopticFixture:
    return write_panoptic(tmp_path / "pan")


def _pan_spec(fix: PanopticFixture, **kw: object) -> CocoDatasetSpec:
    kw.setdefault("panoptic", str(fix.panoptic))
    return CocoDatasetSpec(root=str(fix.images), **kw)


def _pan_expected(fix: PanopticFixture, names: dict[int, str] = PAN_NAMES,
                  supers: dict[str, tuple[int, ...]] = PAN_SUPERS
                  ) -> dict[int, dict[str, np.ndarray]]:
    """image id -> concept name -> (h, w) bool, from the id arrays the fixture drew."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for image_id, ids in fix.ids.items():
        masks = {name: np.zeros(ids.shape, dtype=bool) for name in names.values()}
        for sid, cid, _, _ in PAN_SEGMENTS[image_id]:
            masks[names[cid]] |= ids == sid
        for sup, members in supers.items():
            masks[sup] = np.logical_or.reduce([masks[names[c]] for c in members])
        out[image_id] = masks
    return out


class TestPanoptic:
    def test_vocabulary(self, pan: PanopticFixture) -> None:
        """Things by id, then stuff by id ("dog" clashes: "dog (stuff)"), then supers."""
        ds = CocoDataset(_pan_spec(pan))
        v = ds.vocab
        assert v.names == ("", "person", "car", "dog", "road", "tree-merged", "dog (stuff)",
                           "grass-merged", "person (super)", "vehicle", "animal", "ground",
                           "plant")
        assert v.categories == ("object", "stuff", "supercategory")
        assert [v.category_of(n) for n in range(v.size)] == \
            ["", *["object"] * 3, *["stuff"] * 4, *["supercategory"] * 5]
        assert ds.image_ids == (2, 4, 9)
        assert [s.image_size for s in ds.samples] == [(12, 20), (8, 8), (18, 10)]
        assert [s.image for s in ds.samples] == ["wide.jpg", "empty.jpg", "tall.jpg"]

    @pytest.mark.parametrize("size", [5, 12, 23])
    def test_masks(self, pan: PanopticFixture, size: int) -> None:
        """Each concept's mask is the nearest sample of its segments' pixels in the PNG."""
        ds = CocoDataset(_pan_spec(pan, mask_size=size))
        expected = _pan_expected(pan)
        _check_against(ds, expected, size)
        assert ds.read_labels(ds.image_ids.index(4))[0].shape == (0, size, size)
        big = pan.ids[2] > 255
        assert (big & expected[2]["person"]).any() and (big & expected[2]["car"]).any()
        assert (pan.ids[9] == 2**24 - 1).any() and expected[9]["person"].any()

    def test_only_things_or_only_stuff_painted(self, pan: PanopticFixture) -> None:
        ds = CocoDataset(_pan_spec(pan, categories=("stuff",), mask_size=12))
        assert ds.vocab.size == 13 and ds.vocab.categories == ("stuff",)
        labels = set().union(*(np.unique(ds.read_labels(i)[0]).tolist()
                               for i in range(len(ds))))
        assert labels == {0, 4, 5, 6, 7}

    def test_label_area_equals_dense_counts(self, pan: PanopticFixture) -> None:
        """build_shard + merge_shards count what the drawn id arrays say."""
        ds = CocoDataset(_pan_spec(pan, mask_size=7))
        index = merge_shards(ds.vocab, ds.mask_shape, 2,
                             [build_shard(ds, 0, 2), build_shard(ds, 2, 3)])
        number = {name: n for n, name in enumerate(ds.vocab.names)}
        dense = np.zeros(ds.vocab.size)
        for by_name in _pan_expected(pan).values():
            for name, m in by_name.items():
                dense[number[name]] += _reference_resize(m, 7).sum()
        assert dense[number["animal"]] > 0 and dense[number["dog (stuff)"]] > 0
        np.testing.assert_array_equal(index.label_area(), dense)
        assert index.valid.all() and index.n_images == 3

    @pytest.mark.parametrize("damage", ["wrong size", "missing", "not a png", "gray"])
    def test_bad_png_is_a_bad_sample(self, pan: PanopticFixture, damage: str) -> None:
        """A damaged PNG fails its image only (named in the error); build_shard records it."""
        png = pan.masks / "tall.png"
        if damage == "wrong size":
            write_id_png(png, np.ones((10, 18), dtype=np.int64))
        elif damage == "missing":
            png.unlink()
        elif damage == "not a png":
            png.write_bytes(b"not a png")
        else:
            Image.fromarray(np.ones((18, 10), dtype=np.uint8)).save(png)
        (pan.masks / "empty.png").unlink()  # no segments: its PNG is never read
        ds = CocoDataset(_pan_spec(pan, mask_size=6))
        with pytest.raises(BadSampleError, match=r"panoptic PNG tall\.png") as info:
            ds.read_labels(2)
        if damage == "wrong size":
            assert "is 18x10, image is 10x18" in str(info.value)
        shard = build_shard(ds, 0, 3)
        assert shard.valid.tolist() == [True, True, False]

    def test_with_instances(self, pan: PanopticFixture, tmp_path: Path) -> None:
        """Images come from the instances JSON; panoptic names clashing get " (panoptic)"."""
        cats = [c for c in CATEGORIES if c["name"] != "dog"]  # person, car, cat
        anns = [{"image_id": 2, "category_id": 1, "segmentation": [rect(12, 1, 19, 6)]}]
        images = [im for im in PAN_IMAGES if im["id"] != 4]
        inst = write_json(tmp_path / "inst.json", images, cats, anns)
        ds = CocoDataset(_pan_spec(pan, annotations=str(inst), mask_size=9))
        assert ds.vocab.names == (
            "", "person", "car", "cat", "person (panoptic)", "car (panoptic)", "dog", "road",
            "tree-merged", "dog (panoptic)", "grass-merged", "person (super)", "vehicle",
            "animal", "ground", "plant")
        assert ds.vocab.categories == ("object", "stuff", "supercategory")
        assert ds.image_ids == (2, 9)
        names = {**PAN_NAMES, 1: "person (panoptic)", 3: "car (panoptic)", 190: "dog (panoptic)"}
        expected = _pan_expected(pan, names, {})
        for image_id, oracle in _oracle(inst).items():
            expected[image_id] |= oracle
            m = expected[image_id]
            m |= {"person (super)": m["person"] | m["person (panoptic)"],
                  "vehicle": m["car"] | m["car (panoptic)"],
                  "animal": m["cat"] | m["dog"] | m["dog (panoptic)"],
                  "ground": m["road"], "plant": m["tree-merged"] | m["grass-merged"]}
        assert (expected[2]["person"] & ~expected[2]["person (panoptic)"]).any()
        _check_against(ds, expected, 9)

    def test_unknown_category_and_malformed(self, pan: PanopticFixture) -> None:
        raw = json.loads(pan.panoptic.read_text())
        raw["annotations"][0]["segments_info"][0]["category_id"] = 77
        pan.panoptic.write_text(json.dumps(raw))
        with pytest.raises(DatasetError, match="unknown category_id 77") as info:
            CocoDataset(_pan_spec(pan))
        assert "\n" not in str(info.value)
        del raw["categories"][0]["isthing"]
        pan.panoptic.write_text(json.dumps(raw))
        with pytest.raises(DatasetError, match=r"malformed dataset\.panoptic"):
            CocoDataset(_pan_spec(pan))
        with pytest.raises(DatasetError, match=r"dataset\.panoptic file not found"):
            CocoDataset(_pan_spec(pan, panoptic=str(pan.panoptic.with_name("no.json"))))

    def test_spec_needs_annotations_or_panoptic(self, pan: PanopticFixture) -> None:
        with pytest.raises(ValidationError, match=r"'annotations'.*'panoptic'"):
            CocoDatasetSpec(root=str(pan.images))
        data = {"model": {"name": "resnet18"}, "layers": ["layer4"],
                "dataset": {"format": "coco", "root": str(pan.images)}}
        with pytest.raises(SpecError) as info:
            parse_spec(data)
        message = str(info.value)
        assert "\n" not in message and "field 'dataset'" in message
        assert "give 'annotations' (instances JSON) or 'panoptic' (panoptic JSON)" in message
        with pytest.raises(ValidationError, match="'panoptic_masks' needs 'panoptic'"):
            CocoDatasetSpec(root=".", annotations="i.json", panoptic_masks="p")
        assert CocoDatasetSpec(root=".", panoptic="p.json").annotations is None

    def test_default_png_directory(self, pan: PanopticFixture, tmp_path: Path) -> None:
        """Default: the JSON path without .json; an explicit panoptic_masks wins."""
        assert masks_dir("annotations/panoptic_val2017.json", None) == \
            "annotations/panoptic_val2017"
        assert masks_dir("s3://b/a/panoptic_val2017.JSON", None) == "s3://b/a/panoptic_val2017"
        assert masks_dir("a/p.json", "elsewhere") == "elsewhere"
        with pytest.raises(DatasetError, match="panoptic_masks"):
            masks_dir("a/p.txt", None)
        assert pan.masks == pan.panoptic.with_suffix("")
        assert len(CocoDataset(_pan_spec(pan))) == 3  # found at the default place
        moved = pan.masks.rename(tmp_path / "pngs")
        with pytest.raises(DatasetError, match="panoptic PNG directory does not exist"):
            CocoDataset(_pan_spec(pan))
        ds = CocoDataset(_pan_spec(pan, panoptic_masks=str(moved), mask_size=12))
        _check_against(ds, _pan_expected(pan), 12)

    def test_relative_paths_resolve_like_other_dataset_paths(self, tmp_path: Path) -> None:
        data = {"model": {"name": "resnet18"}, "layers": ["layer4"],
                "dataset": {"format": "coco", "root": "img", "panoptic": "ann/p.json",
                            "panoptic_masks": "ann/p"}}
        spec = parse_spec(data, base=tmp_path).dataset
        assert isinstance(spec, CocoDatasetSpec)
        assert spec.panoptic == str(tmp_path / "ann" / "p.json")
        assert spec.panoptic_masks == str(tmp_path / "ann" / "p")
        data["dataset"] |= {"panoptic": "s3://b/p.json", "panoptic_masks": "s3://b/p"}
        spec = parse_spec(data, base=tmp_path).dataset
        assert isinstance(spec, CocoDatasetSpec)
        assert (spec.panoptic, spec.panoptic_masks) == ("s3://b/p.json", "s3://b/p")

    def test_json_is_read_once_per_process(self, pan: PanopticFixture) -> None:
        a, b = CocoDataset(_pan_spec(pan)), CocoDataset(_pan_spec(pan))
        assert a._panoptic is not None and a._panoptic is b._panoptic
        raw = json.loads(pan.panoptic.read_text())
        raw["images"] = raw["images"][:1]
        pan.panoptic.write_text(json.dumps(raw))
        assert CocoDataset(_pan_spec(pan)).image_ids == (9,)


def test_panoptic_on_s3_equals_local(pan: PanopticFixture, local_s3: LocalS3) -> None:
    """JSON and PNGs read through s3:// (default PNG prefix) give the local masks."""
    uri = local_s3.upload(pan.images.parent, local_s3.bucket("coco") + "/pan")
    remote = CocoDataset(CocoDatasetSpec(root=f"{uri}/images", mask_size=7,
                                         panoptic=f"{uri}/annotations/panoptic.json"))
    local = CocoDataset(_pan_spec(pan, mask_size=7))
    assert remote.samples == local.samples and remote.vocab.names == local.vocab.names
    for i in range(len(local)):
        assert np.array_equal(remote.read_labels(i)[0], local.read_labels(i)[0])
    local_s3.fs.rm_file(f"{uri}/annotations/panoptic/tall.png"[5:])
    with pytest.raises(BadSampleError, match=r"tall\.png"):
        remote.read_labels(2)


LABELME = (Path(__file__).parents[3] / ".scratch" / "labelme-examples" / "usr" / "share" / "doc"
           / "labelme-examples" / "examples" / "instance_segmentation" / "data_dataset_coco")


@pytest.fixture
def labelme() -> Path:
    """Debian's labelme-examples COCO file (3 VOC photos), fetched by `make fixtures`."""
    if not (LABELME / "annotations.json").is_file():
        if os.environ.get("RAY_DISSECT_REQUIRE_LABELME"):
            pytest.fail(f"labelme-examples missing at {LABELME}: `make fixtures` failed")
        pytest.skip("labelme-examples not fetched (`make fixtures` needs apt-get)")
    return LABELME


@pytest.mark.parametrize("size", [37, 112])
def test_real_labelme_coco_file_equals_ann_to_mask(labelme: Path, size: int) -> None:
    """A real COCO file written by another tool (labelme2coco, VOC photos, polygons):
    images decode at their listed size and every category mask is annToMask's, resized."""
    ds = CocoDataset(CocoDatasetSpec(root=str(labelme), annotations=str(labelme /
                                     "annotations.json"), mask_size=size))
    raw = json.loads((labelme / "annotations.json").read_text())
    assert len(ds) == 3 and ds.vocab.categories == ("object", "supercategory")
    assert ds.vocab.names[1:] == tuple(c["name"] for c in raw["categories"])
    for i, sample in enumerate(ds.samples):
        assert ds.read_image(i).shape == (*sample.image_size, 3)
    expected = _oracle(labelme / "annotations.json")
    assert sum(m.any() for masks in expected.values() for m in masks.values()) >= 5
    _check_against(ds, expected, size)
