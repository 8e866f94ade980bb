"""Tests for ray_dissect.datasets.pascal_part on .mat files written in PASCAL-Part's layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from ray_dissect.datasets import pascal_part as pp

H, W = 6, 8


def box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """(H, W) uint8 mask with rows r0..r1-1 and cols c0..c1-1 set."""
    mask = np.zeros((H, W), np.uint8)
    mask[r0:r1, c0:c1] = 1
    return mask


def struct_array(fields: list[str], rows: list[tuple]) -> np.ndarray:
    """A (1, n) MATLAB struct array (object fields) as savemat writes it."""
    out = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for j, row in enumerate(rows):
        out[0, j] = row
    return out


def write_mat(path: Path, objects: list[tuple], drop: str | None = None) -> Path:
    """Write anno.objects like PASCAL-Part; ``drop`` removes one object field."""
    fields = [f for f in ("class", "class_ind", "mask", "parts") if f != drop]
    rows = []
    for cls, ind, mask, parts in objects:
        part_arr = (struct_array(["part_name", "mask"], parts) if parts
                    else np.zeros((0, 0)))
        full = {"class": cls, "class_ind": ind, "mask": mask, "parts": part_arr}
        rows.append(tuple(full[f] for f in fields))
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("2008_000123", struct_array(fields, rows))
    sio.savemat(path, {"anno": anno})
    return path


def scene() -> list[tuple]:
    """A person occluded by a later dog (one part), then a boat without parts."""
    person = ("person", 15, box(0, 6, 0, 5),
              [("head", box(0, 2, 0, 5)), ("lhand", box(2, 4, 0, 2)), ("rlleg", box(4, 6, 0, 5))])
    dog = ("dog", 12, box(2, 6, 3, 8), [("lfleg", box(4, 6, 5, 8))])
    boat: tuple = ("boat", 4, box(0, 2, 6, 8), [])
    return [person, dog, boat]


def pid(name: str) -> int:
    """Part id of a grouped name."""
    return pp.PART_NAMES.index(name) + 1


def expected_maps() -> tuple[np.ndarray, np.ndarray]:
    """Hand-drawn object and part maps of scene()."""
    p, d, b = 15, 12, 4
    objects = np.array([
        [p, p, p, p, p, 0, b, b],
        [p, p, p, p, p, 0, b, b],
        [p, p, p, d, d, d, d, d],
        [p, p, p, d, d, d, d, d],
        [p, p, p, d, d, d, d, d],
        [p, p, p, d, d, d, d, d],
    ])
    hd, hn, lg = pid("head"), pid("hand"), pid("leg")
    parts = np.array([
        [hd, hd, hd, hd, hd, 0, 0, 0],
        [hd, hd, hd, hd, hd, 0, 0, 0],
        [hn, hn, 0, 0, 0, 0, 0, 0],
        [hn, hn, 0, 0, 0, 0, 0, 0],
        [lg, lg, lg, 0, 0, lg, lg, lg],
        [lg, lg, lg, 0, 0, lg, lg, lg],
    ])
    return objects, parts


def test_decode_matches_hand_drawn_maps_with_occlusion(tmp_path: Path) -> None:
    """Later objects cover earlier ones and parts show only where their object is visible."""
    labels = pp.load_labels(write_mat(tmp_path / "a.mat", scene()))
    objects, parts = expected_maps()
    np.testing.assert_array_equal(labels.object, objects)
    np.testing.assert_array_equal(labels.part, parts)
    assert labels.problems == ()
    assert labels.object.shape == (H, W) and labels.part.dtype == np.int32
    cats = labels.categories()
    assert set(cats) == {"object", "part"} and cats["part"][0] is labels.part


@pytest.mark.parametrize("kwargs", [
    {"squeeze_me": True},
    {"struct_as_record": False},
    {"squeeze_me": True, "struct_as_record": False},
    {"chars_as_strings": False},
])
def test_every_loadmat_variant_decodes_the_same(tmp_path: Path, kwargs: dict[str, bool]) -> None:
    """Fields are read by name whatever loadmat's squeeze/struct options, single part included."""
    path = write_mat(tmp_path / "a.mat", scene())
    ann = pp.parse_annotation(sio.loadmat(path, **kwargs))
    assert ann.imname == "2008_000123"
    assert [o.class_name for o in ann.objects] == ["person", "dog", "boat"]
    assert [len(o.parts) for o in ann.objects] == [3, 1, 0]
    labels = pp.decode(ann)
    objects, parts = expected_maps()
    np.testing.assert_array_equal(labels.object, objects)
    np.testing.assert_array_equal(labels.part, parts)


def test_grouping_follows_merged_part2ind_not_split() -> None:
    """Left/right/front/back and numbered parts share one group, unlike split('_')."""
    assert {pp.group_part("cat", n) for n in ("lfleg", "rfleg", "lbleg", "rbleg")} == {"leg"}
    assert {pp.group_part("horse", n) for n in ("lfuleg", "rblleg")} == {"leg"}
    assert pp.group_part("horse", "lfho") == "hoof"
    assert pp.group_part("person", "lear") == pp.group_part("person", "rear") == "ear"
    assert pp.group_part("person", "ruarm") == "arm"
    assert pp.group_part("bus", "wheel_1") == pp.group_part("bus", "wheel_7") == "wheel"
    assert pp.group_part("car", "door_3") == "door"
    assert pp.group_part("car", "window_23") == "window"
    assert pp.group_part("car", "fliplate") == "license plate"
    assert pp.group_part("train", "coach_2") == "coach"
    assert pp.group_part("train", "croofside_4") == "coach roof"
    assert pp.group_part("person", "lfleg") is None
    assert pp.group_part("person", "window_1") is None
    assert pp.group_part("boat", "wheel_1") is None
    assert all(pp.PART_MAP[c] == {} for c in ("boat", "chair", "diningtable", "sofa"))
    assert set(pp.PART_MAP) == set(pp.VOC_CLASSES)


def test_unknown_part_is_reported_not_guessed(tmp_path: Path) -> None:
    """An unknown part name becomes a problem line and leaves no pixels; known parts stay."""
    objects = [("cat", 8, box(0, 6, 0, 8),
                [("whisker", box(0, 2, 0, 8)), ("tail", box(5, 6, 0, 2))])]
    labels = pp.load_labels(write_mat(tmp_path / "a.mat", objects))
    assert len(labels.problems) == 1 and "'whisker'" in labels.problems[0]
    expected = np.zeros((H, W), np.int32)
    expected[5, 0:2] = pid("tail")
    np.testing.assert_array_equal(labels.part, expected)


def test_corrupt_and_incomplete_files_raise_bad_annotation(tmp_path: Path) -> None:
    """Non-.mat bytes, a missing anno, a missing field, a bad class or shape raise BadAnnotation."""
    junk = tmp_path / "junk.mat"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(pp.BadAnnotation, match="not a readable"):
        pp.read_annotation(junk)
    other = tmp_path / "other.mat"
    sio.savemat(other, {"something": np.ones(3)})
    with pytest.raises(pp.BadAnnotation, match="'anno'"):
        pp.read_annotation(other)
    with pytest.raises(pp.BadAnnotation, match="no field 'mask'"):
        pp.read_annotation(write_mat(tmp_path / "m.mat", scene(), drop="mask"))
    wrong_ind: list[tuple] = [("dog", 3, box(0, 2, 0, 2), [])]
    with pytest.raises(pp.BadAnnotation, match="class_ind"):
        pp.read_annotation(write_mat(tmp_path / "c.mat", wrong_ind))
    small = [("cat", 8, box(0, 6, 0, 8), [("head", np.ones((3, 3), np.uint8))])]
    with pytest.raises(pp.BadAnnotation, match="shape"):
        pp.read_annotation(write_mat(tmp_path / "s.mat", small))
    with pytest.raises(pp.BadAnnotation) as info:
        pp.read_annotation(junk)
    assert "\n" not in str(info.value)


def test_resample_nearest_at_pixel_centres() -> None:
    """Each target pixel takes the source pixel under its centre (375x500 -> 112x112)."""
    src = np.arange(375)[:, None] * 1000 + np.arange(500)[None, :]
    got = pp.resample(src, (112, 112))
    rows = [math.floor((i + 0.5) * 375 / 112) for i in range(112)]
    cols = [math.floor((j + 0.5) * 500 / 112) for j in range(112)]
    np.testing.assert_array_equal(got, np.array(rows)[:, None] * 1000 + np.array(cols))
    np.testing.assert_array_equal(pp.resample(np.arange(4)[None, :], (1, 2)), [[1, 3]])
    np.testing.assert_array_equal(pp.resample(src, src.shape), src)


def test_concept_vocabulary_is_sorted_and_grouped() -> None:
    """The vocabulary lists the 20 VOC classes in VOC order, then unique grouped parts."""
    vocab = pp.concept_vocabulary()
    assert list(vocab) == sorted(vocab)
    objects = [name for cat, name in vocab if cat == "object"]
    parts = [name for cat, name in vocab if cat == "part"]
    assert objects == list(pp.VOC_CLASSES) and len(objects) == 20
    assert objects.index("person") + 1 == 15
    assert parts == list(pp.PART_NAMES) and len(set(parts)) == len(parts)
    assert {"leg", "ear", "wheel", "door", "window"} <= set(parts)
    assert not {"lfleg", "lear", "wheel_1", "door_3"} & set(parts)
