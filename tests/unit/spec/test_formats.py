"""The dataset-format registry: one entry gives the spec union, the names in messages and
hints, path resolution and the reader that opens the format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from ray_dissect.datasets import registry
from ray_dissect.datasets.base import Sample
from ray_dissect.errors import SpecError
from ray_dissect.spec import (
    CONCEPT_FORMATS,
    DATASET_FORMATS,
    FORMATS,
    FORMATS_BY_NAME,
    PATH,
    DatasetFormat,
    FormatSpec,
    JobSpec,
    one_of,
    parse_spec,
)
from ray_dissect.spec import dataset as spec_dataset
from ray_dissect.spec.formats import by_name, format_union


class ToySpec(FormatSpec):
    """A format registered only in these tests."""

    format: Literal["toy"] = "toy"
    root: Annotated[str, PATH]
    labels: Annotated[str, PATH]
    note: str = "n"


class ToyReader:
    """An image-only reader of one black 2x2 image per ``root`` character."""

    def __init__(self, spec: ToySpec) -> None:
        self.samples = tuple(Sample(f"{c}.png", (2, 2), (), ()) for c in spec.root)

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        return np.zeros((*self.samples[index].image_size, 3), np.uint8)


TOY = DatasetFormat(ToySpec, f"{__name__}:ToyReader", concepts=False)


@pytest.fixture
def with_toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register TOY (after the real formats) for one test."""
    monkeypatch.setattr(spec_dataset, "FORMATS", (*FORMATS, TOY))
    monkeypatch.setattr(spec_dataset, "FORMATS_BY_NAME", by_name((*FORMATS, TOY)))


def test_the_names_are_the_registered_ones() -> None:
    assert DATASET_FORMATS == tuple(fmt.name for fmt in FORMATS) == tuple(FORMATS_BY_NAME)
    assert DATASET_FORMATS == ("broden", "coco", "images", "pascal_part")
    assert CONCEPT_FORMATS == ("broden", "coco", "pascal_part")


def test_the_job_spec_union_has_every_registered_model() -> None:
    schema = JobSpec.model_json_schema()
    members = schema["properties"]["dataset"]["oneOf"]
    assert [m["$ref"].rsplit("/", 1)[1] for m in members] == [
        fmt.spec.__name__ for fmt in FORMATS]


def test_a_union_with_a_new_format_selects_it_by_its_tag() -> None:
    union = TypeAdapter(format_union((*FORMATS, TOY)))
    toy = union.validate_python({"format": "toy", "root": "ab", "labels": "l"})
    assert isinstance(toy, ToySpec) and toy.root == "ab"
    assert type(union.validate_python({"root": "r"})) is FORMATS[0].spec  # no format: first
    with pytest.raises(ValidationError, match="toy"):
        union.validate_python({"format": "toy", "root": "ab"})  # the toy model's own check
    with pytest.raises(ValidationError, match="'broden', 'coco', 'images', 'pascal_part', 'toy'"):
        union.validate_python({"format": "nope", "root": "r"})


def test_paths_are_the_fields_marked_path() -> None:
    assert TOY.paths == ("root", "labels")
    assert {fmt.name: fmt.paths for fmt in FORMATS} == {
        "broden": ("root",), "coco": ("root", "annotations", "stuff", "panoptic",
                                      "panoptic_masks"),
        "images": ("root",), "pascal_part": ("root", "images")}


@pytest.mark.parametrize(("dataset", "resolved"), [
    ({"root": "d"}, {"root": "d"}),
    ({"format": "coco", "root": "i", "annotations": "a.json", "stuff": "s3://b/s.json",
      "panoptic": "p.json", "panoptic_masks": "p"},
     {"root": "i", "annotations": "a.json", "panoptic": "p.json", "panoptic_masks": "p"}),
    ({"format": "pascal_part", "root": "ann", "images": "img"}, {"root": "ann", "images": "img"}),
])
def test_a_formats_path_fields_resolve_against_the_spec_directory(
        tmp_path: Path, dataset: dict[str, str], resolved: dict[str, str]) -> None:
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": dataset},
                      base=tmp_path)
    for key, value in dataset.items():
        expected = str((tmp_path / value).resolve()) if key in resolved else value
        assert getattr(spec.dataset, key) == expected


def test_the_registry_opens_a_registered_format_with_its_reader(with_toy: None) -> None:
    opened = registry.open_dataset(ToySpec(root="abc", labels="l"))
    assert isinstance(opened, ToyReader) and [s.image for s in opened.samples] == [
        "a.png", "b.png", "c.png"]
    with pytest.raises(SpecError, match=r"has no concept labels.*format broden, coco or "
                                        r"pascal_part"):
        registry.open_concept_dataset(ToySpec(root="abc", labels="l"))


def test_messages_name_the_registered_formats(with_toy: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match=r"\['broden', 'coco', 'images', 'pascal_part', 'toy'\]"):
        registry.open_dataset(_Named("nope"))
    assert registry.concept_formats() == "broden, coco or pascal_part"
    concept_toy = DatasetFormat(ToySpec, TOY.reader, concepts=True)
    monkeypatch.setattr(spec_dataset, "FORMATS", (*FORMATS, concept_toy))
    assert registry.concept_formats() == "broden, coco, pascal_part or toy"


class _Named:
    def __init__(self, format: str) -> None:
        self.format = format


def test_a_format_is_refused_without_a_literal_tag_or_a_module_class_reader() -> None:
    class Untagged(FormatSpec):
        format: str = "x"

    with pytest.raises(TypeError, match=r"Untagged\.format must be Literal"):
        DatasetFormat(Untagged, "m:C", concepts=False)
    with pytest.raises(TypeError, match="'module:Class'"):
        DatasetFormat(ToySpec, "m.C", concepts=False)
    with pytest.raises(TypeError, match="repeat"):
        by_name((TOY, TOY))


@pytest.mark.parametrize(("names", "prose"), [
    (["a"], "a"), (["a", "b"], "a or b"), (["a", "b", "c"], "a, b or c")])
def test_one_of(names: list[str], prose: str) -> None:
    assert one_of(names) == prose
