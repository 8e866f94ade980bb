"""Every registered dataset format passes the reader contract (:mod:`fixtures.dataset_contract`)
on its own small fixture; a registered format without a contract class here fails a test."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from fixtures.coco import write_coco, write_panoptic
from fixtures.dataset_contract import ConceptDatasetContract, ImageDatasetContract
from fixtures.pascal_part import box, write_annotation, write_jpeg
from fixtures.photos import photo_folder

from ray_dissect.datasets.base import Sample
from ray_dissect.spec import (
    FORMATS,
    CocoDatasetSpec,
    DatasetFormat,
    DatasetSpec,
    ImagesDatasetSpec,
    PascalPartDatasetSpec,
)

Names = dict[int, frozenset[str]]


class TestBroden(ConceptDatasetContract):
    """The hand-written four-image Broden fixture (tests/conftest.py)."""

    format = "broden"
    images = tuple(f"fix/img_{i}.png" for i in range(4))
    names: ClassVar[Names] = {
        0: frozenset({"box", "lid", "handle", "red", "kitchen"}),
        1: frozenset({"ball", "box", "red", "kitchen"}),
        2: frozenset({"box", "striped", "dotted"}), 3: frozenset({"ball", "dotted"})}

    @pytest.fixture
    def spec(self, four_images: Path) -> DatasetSpec:
        return DatasetSpec(root=str(four_images))

    def image_file(self, spec: Any, sample: Sample) -> Path:
        return Path(spec.root) / "images" / sample.image

    def label_file(self, spec: Any, sample: Sample) -> Path | None:
        return Path(spec.root) / "images" / sample.pixel_layers[0][1]


class TestCocoInstances(ConceptDatasetContract):
    """fixtures.coco's four images with instances and stuff (image ids 1, 3, 5, 7)."""

    format = "coco"
    images = ("a.png", "b.png", "empty.png", "c.png")
    names: ClassVar[Names] = {
        0: frozenset({"person", "dog", "cat", "car", "grass", "other", "person (super)",
                      "animal", "vehicle", "plant", "other (super)"}),
        1: frozenset({"dog", "person", "animal", "person (super)"}),
        2: frozenset({"grass", "plant"}),
        3: frozenset({"car", "person", "vehicle", "person (super)"})}

    @pytest.fixture
    def spec(self, tmp_path: Path) -> CocoDatasetSpec:
        coco = write_coco(tmp_path / "coco")
        return CocoDatasetSpec(root=str(coco.images), annotations=str(coco.instances),
                               stuff=str(coco.stuff), mask_size=16)

    def image_file(self, spec: Any, sample: Sample) -> Path:
        return Path(spec.root) / sample.image

    def label_file(self, spec: Any, sample: Sample) -> Path | None:
        return None  # the instances and stuff JSONs are read when opening


class TestCocoPanoptic(ConceptDatasetContract):
    """fixtures.coco's three panoptic images (ids 2, 4, 9), one PNG of segment ids each."""

    format = "coco"
    images = ("wide.jpg", "empty.jpg", "tall.jpg")
    names: ClassVar[Names] = {
        0: frozenset({"road", "person", "car", "tree-merged", "grass-merged", "ground",
                      "person (super)", "vehicle", "plant"}),
        1: frozenset(),
        2: frozenset({"dog", "dog (stuff)", "grass-merged", "person", "animal", "plant",
                      "person (super)"})}

    @pytest.fixture
    def spec(self, tmp_path: Path) -> CocoDatasetSpec:
        pan = write_panoptic(tmp_path / "pan")
        return CocoDatasetSpec(root=str(pan.images), panoptic=str(pan.panoptic), mask_size=20)

    def image_file(self, spec: Any, sample: Sample) -> Path:
        return Path(spec.root) / sample.image

    def label_file(self, spec: Any, sample: Sample) -> Path | None:
        return Path(spec.panoptic[:-len(".json")]) / Path(sample.image).with_suffix(".png")


class TestPascalPart(ConceptDatasetContract):
    """Two PASCAL-Part annotations: a person with a head, a dog without parts."""

    format = "pascal_part"
    images = ("2008_000001.jpg", "2008_000002.jpg")
    names: ClassVar[Names] = {0: frozenset({"person", "head"}), 1: frozenset({"dog"})}

    @pytest.fixture
    def spec(self, tmp_path: Path) -> PascalPartDatasetSpec:
        ann, img, shape = tmp_path / "Annotations_Part", tmp_path / "JPEGImages", (8, 6)
        write_annotation(ann / "2008_000001.mat", "2008_000001", [
            ("person", 15, box(shape, 0, 8, 0, 4), [("head", box(shape, 0, 2, 0, 4))])])
        write_annotation(ann / "2008_000002.mat", "2008_000002",
                         [("dog", 12, box(shape, 2, 6, 1, 6), [])])
        for stem in ("2008_000001", "2008_000002"):
            write_jpeg(img / f"{stem}.jpg", np.full((*shape, 3), 90, np.uint8))
        return PascalPartDatasetSpec(root=str(ann), images=str(img), mask_size=4)

    def image_file(self, spec: Any, sample: Sample) -> Path:
        return Path(spec.images) / sample.image

    def label_file(self, spec: Any, sample: Sample) -> Path | None:
        return Path(spec.root) / Path(sample.image).with_suffix(".mat")


class TestImages(ImageDatasetContract):
    """fixtures.photos' class folders, with an empty and a truncated file among them."""

    format = "images"
    images = ("geo/0.png", "geo/1.png", "geo/2.png", "geo/empty.png",
              "lmk/0.png", "lmk/1.png", "lmk/2.png", "lmk/cut.png")
    bad = frozenset({3, 7})

    @pytest.fixture
    def spec(self, tmp_path: Path) -> ImagesDatasetSpec:
        return ImagesDatasetSpec(root=str(photo_folder(tmp_path / "photos")))

    def image_file(self, spec: Any, sample: Sample) -> Path:
        return Path(spec.root) / sample.image


def missing_contracts(formats: tuple[DatasetFormat, ...],
                      suites: list[type[ImageDatasetContract]]) -> list[str]:
    """The formats of ``formats`` without a suite of their kind (a concept format needs a
    :class:`ConceptDatasetContract`, an image-only one an :class:`ImageDatasetContract`
    that is not one)."""
    return [fmt.name for fmt in formats if not any(
        suite.format == fmt.name and issubclass(suite, ConceptDatasetContract) == fmt.concepts
        for suite in suites)]


SUITES = [value for value in list(globals().values()) if isinstance(value, type)
          and issubclass(value, ImageDatasetContract) and value.__name__.startswith("Test")]


def test_every_registered_format_runs_the_contract() -> None:
    assert missing_contracts(FORMATS, SUITES) == []


def test_a_format_without_a_suite_of_its_kind_is_reported() -> None:
    toy = DatasetFormat(ImagesDatasetSpec, "toy:Reader", concepts=True)  # images, said concept
    assert missing_contracts((*FORMATS, toy), SUITES) == ["images"]
    assert missing_contracts(FORMATS, [s for s in SUITES if s is not TestPascalPart]) == [
        "pascal_part"]
