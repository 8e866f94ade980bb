"""Tests for the ``format: pascal_part`` reader on folders of .mat files and JPEGs it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.pascal_part import box, write_annotation, write_jpeg
from fixtures.s3 import LocalS3

from ray_dissect.concepts.index import build_shard
from ray_dissect.datasets.base import BadSampleError, ConceptDataset
from ray_dissect.datasets.pascal_part import PART_NAMES, BadAnnotation, concept_vocabulary
from ray_dissect.datasets.pascal_part_reader import PascalPartDataset
from ray_dissect.datasets.registry import open_dataset
from ray_dissect.errors import DatasetError, SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import PascalPartDatasetSpec, parse_spec

P, D, BOAT, BOTTLE = 15, 12, 4, 5  # VOC class_ind = object label number


def part(name: str) -> int:
    """Global label number of a grouped part: 20 objects, then PART_NAMES from 1."""
    return 20 + PART_NAMES.index(name) + 1


HD, HN, LG, CAP, BODY = part("head"), part("hand"), part("leg"), part("cap"), part("body")

# Sample 0 (8x8): a person, then a dog drawn over the person's lower right (occlusion): the
# person's left hand (rows 4-5, cols 0-2) loses col 2 to the dog's head.
SQUARE = (8, 8)
PERSON_DOG = [
    ("person", P, box(SQUARE, 0, 8, 0, 4), [("head", box(SQUARE, 0, 2, 0, 4)),
                                            ("lhand", box(SQUARE, 4, 6, 0, 3))]),
    ("dog", D, box(SQUARE, 4, 8, 2, 8), [("head", box(SQUARE, 4, 6, 2, 4)),
                                         ("lfleg", box(SQUARE, 6, 8, 6, 8))]),
]
PERSON_DOG_OBJECTS = np.array([[P] * 4 + [0] * 4] * 4 + [[P, P] + [D] * 6] * 4)
PERSON_DOG_PARTS = np.array([[HD] * 4 + [0] * 4] * 2 + [[0] * 8] * 2
                            + [[HN, HN, HD, HD] + [0] * 4] * 2 + [[0] * 6 + [LG, LG]] * 2)

# Sample 1 (6x8, not square): a boat, then a bottle (cap over body) in front of it.
WIDE = (6, 8)
BOAT_BOTTLE = [
    ("boat", BOAT, box(WIDE, 2, 6, 0, 8), []),
    ("bottle", BOTTLE, box(WIDE, 0, 6, 3, 5), [("cap", box(WIDE, 0, 2, 3, 5)),
                                               ("body", box(WIDE, 2, 6, 3, 5))]),
]
BOAT_BOTTLE_OBJECTS = np.array([[0, 0, 0, BOTTLE, BOTTLE, 0, 0, 0]] * 2
                               + [[BOAT] * 3 + [BOTTLE] * 2 + [BOAT] * 3] * 4)
BOAT_BOTTLE_PARTS = np.array([[0, 0, 0, CAP, CAP, 0, 0, 0]] * 2
                             + [[0, 0, 0, BODY, BODY, 0, 0, 0]] * 4)
# Nearest at pixel centres to 4x4, worked out by hand: source index (2i + 1) * n // 8.
ROWS_OF = {8: [1, 3, 5, 7], 6: [0, 2, 3, 5]}
COLS_4 = [1, 3, 5, 7]


def write_folder(root: Path) -> tuple[Path, Path]:
    """Annotations_Part/ and JPEGImages/ with the two scenes above (gray JPEGs)."""
    ann, img = root / "Annotations_Part", root / "JPEGImages"
    for stem, objects, shape in (("2008_000001", PERSON_DOG, SQUARE),
                                 ("2008_000002", BOAT_BOTTLE, WIDE)):
        write_annotation(ann / f"{stem}.mat", stem, objects)
        write_jpeg(img / f"{stem}.jpg", np.full((*shape, 3), 128, np.uint8))
    return ann, img


def spec_of(ann: Path | str, img: Path | str, **extra: object) -> PascalPartDatasetSpec:
    """The dataset sub-spec, validated as a job spec would validate it."""
    return PascalPartDatasetSpec.model_validate(
        {"format": "pascal_part", "root": str(ann), "images": str(img), **extra})


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, Path]:
    """The two-scene PASCAL-Part folder."""
    return write_folder(tmp_path / "pascal")


def test_full_size_masks_are_the_hand_drawn_ones(folder: tuple[Path, Path]) -> None:
    """At mask_size 8 the square scene's object and part layers are the hand-drawn maps,
    occlusion included, with no whole-image labels."""
    data = PascalPartDataset(spec_of(*folder, mask_size=8))
    pixel, whole = data.read_labels(0)
    assert pixel.dtype == np.int32 and pixel.shape == (2, 8, 8) and whole.shape == (0,)
    np.testing.assert_array_equal(pixel[0], PERSON_DOG_OBJECTS)
    np.testing.assert_array_equal(pixel[1], PERSON_DOG_PARTS)
    assert data.mask_shape == (8, 8)


def test_masks_are_sampled_to_one_square_shape(folder: tuple[Path, Path]) -> None:
    """At mask_size 4 both scenes (8x8 and 6x8) give 4x4 layers sampled at pixel centres."""
    data = PascalPartDataset(spec_of(*folder, mask_size=4))
    for index, (objects, parts) in enumerate([(PERSON_DOG_OBJECTS, PERSON_DOG_PARTS),
                                              (BOAT_BOTTLE_OBJECTS, BOAT_BOTTLE_PARTS)]):
        rows = np.array(ROWS_OF[objects.shape[0]])[:, None]
        pixel, _ = data.read_labels(index)
        assert pixel.shape == (2, 4, 4)
        np.testing.assert_array_equal(pixel[0], objects[rows, COLS_4])
        np.testing.assert_array_equal(pixel[1], parts[rows, COLS_4])


def test_vocabulary_numbering_and_categories(folder: tuple[Path, Path]) -> None:
    """Label 0 is empty, 1-20 the VOC classes by class_ind, then the grouped parts in
    concept_vocabulary order, each with its own category as primary."""
    vocab = PascalPartDataset(spec_of(*folder)).vocab
    assert vocab.names[0] == "" and vocab.names[D] == "dog" and vocab.names[P] == "person"
    assert vocab.names[HD] == "head" and vocab.names[LG] == "leg" and vocab.names[CAP] == "cap"
    assert list(zip([vocab.category_of(n) for n in range(1, vocab.size)], vocab.names[1:],
                    strict=True)) == list(concept_vocabulary())
    assert vocab.categories == ("object", "part") and vocab.size == 21 + len(PART_NAMES)
    assert vocab.membership.shape == (vocab.size, 2) and vocab.membership.sum() == vocab.size - 1
    assert vocab.primary[0] == -1 and vocab.primary[1] == 0 and vocab.primary[HD] == 1
    assert len(set(vocab.names)) == vocab.size  # no part shares a name with a class


def test_category_filter_keeps_numbers(folder: tuple[Path, Path]) -> None:
    """categories: [part] lists only parts and returns only the part layer, same numbers."""
    data = PascalPartDataset(spec_of(*folder, categories=["part"], mask_size=8))
    pixel, _ = data.read_labels(0)
    assert data.vocab.categories == ("part",) and pixel.shape == (1, 8, 8)
    np.testing.assert_array_equal(pixel[0], PERSON_DOG_PARTS)
    assert data.vocab.primary[D] == -1 and data.vocab.primary[HD] == 0
    with pytest.raises(DatasetError, match=r"unknown categories \['scene'\]"):
        PascalPartDataset(spec_of(*folder, categories=["scene"]))
    with pytest.raises(SpecError, match=r"field 'dataset\.categories'"):
        parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                    "dataset": {"format": "pascal_part", "root": "a", "images": "b",
                                "categories": []}})


def test_samples_images_limit_and_dispatch(folder: tuple[Path, Path]) -> None:
    """Samples are the sorted .mat stems with <stem>.jpg images; limit keeps the first;
    open_dataset gives a ConceptDataset whose images decode."""
    data = open_dataset(spec_of(*folder))
    assert isinstance(data, ConceptDataset) and len(data) == 2
    assert [s.image for s in data.samples] == ["2008_000001.jpg", "2008_000002.jpg"]
    image = data.read_image(1)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert abs(int(image[0, 0, 0]) - 128) <= 2
    assert [s.image for s in open_dataset(spec_of(*folder, limit=1)).samples] == ["2008_000001.jpg"]


def test_corrupt_mat_and_missing_jpeg_are_bad_samples(folder: tuple[Path, Path]) -> None:
    """A corrupt .mat fails read_labels and a missing JPEG read_image, each a one-line
    BadSampleError naming the file; the concept index records the first and counts it nowhere."""
    ann, img = folder
    (ann / "2008_000003.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    write_jpeg(img / "2008_000003.jpg", np.zeros((8, 8, 3), np.uint8))
    write_annotation(ann / "2008_000004.mat", "2008_000004", PERSON_DOG)
    data = PascalPartDataset(spec_of(ann, img, mask_size=8))
    with pytest.raises(BadAnnotation, match=r"^2008_000003\.mat is not a readable") as info:
        data.read_labels(2)
    assert isinstance(info.value, BadSampleError) and "\n" not in str(info.value)
    with pytest.raises(BadSampleError, match=r"^unreadable image 2008_000004\.jpg"):
        data.read_image(3)
    shard = build_shard(data, 0, 4)
    assert shard.valid.tolist() == [True, True, False, True]
    assert [i for i, _ in shard.errors] == [2] and shard.image_indptr[3] == shard.image_indptr[2]


def test_missing_and_empty_folders_are_one_line_errors(tmp_path: Path) -> None:
    """A missing root or images folder, or a root without .mat files, is a DatasetError."""
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "readme.txt").write_text("no annotations")
    (tmp_path / "img").mkdir()
    cases = [((tmp_path / "nope", tmp_path / "img"), "dataset.root is not a directory"),
             ((tmp_path / "ann", tmp_path / "nope"), "dataset.images is not a directory"),
             ((tmp_path / "ann", tmp_path / "img"), "dataset.root holds no .mat")]
    for (ann, img), message in cases:
        with pytest.raises(DatasetError, match=message) as info:
            PascalPartDataset(spec_of(ann, img))
        assert "\n" not in str(info.value)


def test_relative_images_path_resolves_against_the_base(tmp_path: Path) -> None:
    """dataset.images is resolved like dataset.root."""
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"format": "pascal_part", "root": "ann", "images": "jpg"}},
                      base=tmp_path)
    assert spec.dataset.images == str(tmp_path / "jpg")  # type: ignore[union-attr]


def test_pascal_part_on_s3_equals_local(folder: tuple[Path, Path], local_s3: LocalS3) -> None:
    """The same folder uploaded to S3 lists and decodes to the same samples and masks."""
    ann, img = folder
    bucket = local_s3.bucket("pascal-part")
    remote = PascalPartDataset(spec_of(local_s3.upload(ann, f"{bucket}/ann"),
                                       local_s3.upload(img, f"{bucket}/img"), mask_size=8))
    local = PascalPartDataset(spec_of(ann, img, mask_size=8))
    assert remote.samples == local.samples
    for i in range(len(local)):
        np.testing.assert_array_equal(remote.read_labels(i)[0], local.read_labels(i)[0])
        np.testing.assert_array_equal(remote.read_image(i), local.read_image(i))


PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
GRAY, RED, GREEN, BLUE = (128, 128, 128), (255, 0, 0), (0, 255, 0), (0, 0, 255)


def dog_everywhere(shape: tuple[int, int]) -> list[tuple[str, int, np.ndarray, list]]:
    """A dog over the whole image."""
    return [("dog", D, box(shape, 0, 16, 0, 16), [])]


def paint(objects: list[tuple[str, int, np.ndarray, list]], colours: dict[str, tuple]
          ) -> np.ndarray:
    """A gray 16x16 image with each object's visible pixels painted its class colour, and a
    person's head blue."""
    image = np.full((16, 16, 3), GRAY, np.uint8)
    for name, _, mask, parts in objects:
        image[mask > 0] = colours.get(name, GRAY)
        for part_name, part_mask in parts:
            if name == "person" and part_name == "head":
                image[(part_mask > 0) & (mask > 0)] = BLUE
    return image


def test_in_process_job_labels_the_red_unit_dog(tmp_path: Path) -> None:
    """A job over a PASCAL-Part folder labels a planted model's red unit dog (IoU 1), its blue
    unit head (painted on the persons' heads, IoU 1) and its green unit person (the person
    minus its head: hand-computed IoU); a corrupt .mat (its JPEG all red) and a missing JPEG
    (its labels a dog) are recorded and left out of every count, else the IoUs would fall."""
    shape, ann, img = (16, 16), tmp_path / "ann", tmp_path / "img"
    scenes = {
        "a": [("person", P, box(shape, 0, 16, 0, 8), [("head", box(shape, 0, 4, 0, 8))]),
              ("dog", D, box(shape, 8, 16, 4, 16), [("lfleg", box(shape, 12, 16, 12, 16))])],
        "b": [("dog", D, box(shape, 0, 8, 0, 16), []),
              ("boat", BOAT, box(shape, 8, 16, 0, 16), [])],
        "c": [("person", P, box(shape, 0, 16, 4, 12), [("head", box(shape, 0, 4, 4, 12))])],
        "d_corrupt": dog_everywhere(shape), "e_nojpeg": dog_everywhere(shape)}
    for stem, objects in scenes.items():
        write_annotation(ann / f"{stem}.mat", stem, objects)
        if stem != "e_nojpeg":
            write_jpeg(img / f"{stem}.jpg", paint(objects, {"dog": RED, "person": GREEN}))
    (ann / "d_corrupt.mat").write_bytes(b"\x00garbage")
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:color_detectors",
                  "preprocess": {"size": 16, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["pool"],
        "dataset": {"format": "pascal_part", "root": str(ann), "images": str(img),
                    "mask_size": 8},
        "method": {"quantile": 0.45, "top_k": 3},
        "resources": {"batch_size": 1, "shard_images": 2, "units_per_task": 3}})
    summary = run_stages(spec, tmp_path / "out")
    labels = [r.label for r in read_unit_records(tmp_path / "out" / "records" / "pool.jsonl")]
    assert [(x.name, x.category) for x in labels if x] == [
        ("dog", "object"), ("person", "object"), ("head", "part")]
    # Person pixels visible: a 16*8 - 32 under the dog, c 16*8; their heads 32 each.
    body, person = (96 - 32) + (128 - 32), 96 + 128
    assert [x.iou for x in labels if x] == [1.0, pytest.approx(body / person, abs=1e-12), 1.0]
    lines = (tmp_path / "out" / "errors.jsonl").read_text().splitlines()
    assert sorted((e["image"], e["stage"]) for e in map(json.loads, lines)) == [
        ("d_corrupt.jpg", "concepts"), ("e_nojpeg.jpg", "activations")]
    assert summary.images == 5 and summary.valid_images == 3 and summary.bad_samples == 2
