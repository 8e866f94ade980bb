"""Tests for the ``format: images`` reader (a folder of images, classes from subfolders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.s3 import LocalS3
from PIL import Image

from ray_dissect.datasets.base import BadSampleError, ConceptDataset, ImageDataset
from ray_dissect.datasets.images import ImageFolderDataset
from ray_dissect.datasets.registry import open_concept_dataset, open_dataset
from ray_dissect.errors import DatasetError, SpecError
from ray_dissect.spec import IMAGE_EXTENSIONS, ImagesDatasetSpec, parse_spec


def solid(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (6, 4),
          mode: str = "RGB") -> None:
    """Write a one-colour image of (w, h) ``size``; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    (image.convert(mode) if mode != "RGB" else image).save(
        path, format="PNG" if path.suffix.lower() == ".png" else "JPEG", quality=100)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Two class folders (one nested), a top-level image, and files that are not images."""
    root = tmp_path / "photos"
    solid(root / "geo" / "b.JPG", (200, 10, 10))
    solid(root / "geo" / "sub" / "a.png", (90, 90, 90), mode="L")
    solid(root / "lmk" / "x.jpeg", (10, 200, 10))
    solid(root / "top.jpg", (10, 10, 200))
    solid(root / ".hidden" / "y.jpg", (0, 0, 0))
    solid(root / "._z.jpg", (0, 0, 0))
    (root / "notes.txt").write_text("not an image")
    (root / "docs").mkdir()
    (root / "docs" / "readme.md").write_text("a folder without images is no class")
    return root


def spec_of(root: Path | str, **extra: object) -> ImagesDatasetSpec:
    """The dataset sub-spec, validated as in a job spec."""
    return ImagesDatasetSpec.model_validate({"format": "images", "root": str(root), **extra})


def test_listing_order_classes_and_labels(photos: Path) -> None:
    """Images at any depth, in sorted path order; hidden and non-image files skipped; the
    first-level folders holding images are the classes; a top-level image has label -1."""
    data = ImageFolderDataset(spec_of(photos))
    assert [s.image for s in data.samples] == ["geo/b.JPG", "geo/sub/a.png", "lmk/x.jpeg",
                                               "top.jpg"]
    assert data.classes == ("geo", "lmk")
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 0, 1, -1]


def test_read_image_decodes_rgb_and_bad_files_raise(photos: Path) -> None:
    """read_image gives (h, w, 3) uint8 RGB (gray converted); a zero-byte image is a
    BadSampleError naming its path."""
    data = ImageFolderDataset(spec_of(photos))
    red = data.read_image(0)
    assert red.shape == (4, 6, 3) and red.dtype == np.uint8
    assert np.abs(red.astype(int) - [200, 10, 10]).max() <= 3
    np.testing.assert_array_equal(data.read_image(1), np.full((4, 6, 3), 90, np.uint8))
    (photos / "lmk" / "bad.jpg").write_bytes(b"")
    data = ImageFolderDataset(spec_of(photos))
    assert data.samples[2].image == "lmk/bad.jpg"
    with pytest.raises(BadSampleError, match=r"^unreadable image lmk/bad\.jpg"):
        data.read_image(2)


def test_extensions_are_case_insensitive_and_normalised(photos: Path) -> None:
    """extensions match suffixes case-insensitively, given with or without the dot, and are
    stored lower-case with the dot, sorted."""
    assert spec_of(photos, extensions=["JPG", ".jpg", "Png"]).extensions == (".jpg", ".png")
    assert spec_of(photos).extensions == IMAGE_EXTENSIONS
    assert [s.image for s in ImageFolderDataset(spec_of(photos, extensions=["PNG"])).samples
            ] == ["geo/sub/a.png"]
    for bad in ([], [""], ["a/b"]):
        with pytest.raises(SpecError, match=r"field 'dataset\.extensions'"):
            parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                        "dataset": {"format": "images", "root": "p", "extensions": bad}})


def test_limit_keeps_the_first_images_and_every_class(photos: Path) -> None:
    """limit keeps the first N paths; the classes stay those of the whole folder."""
    data = ImageFolderDataset(spec_of(photos, limit=2))
    assert [s.image for s in data.samples] == ["geo/b.JPG", "geo/sub/a.png"]
    assert data.classes == ("geo", "lmk") and data.labels.tolist() == [0, 0]


def test_images_only_in_root_have_no_class(tmp_path: Path) -> None:
    """Without subfolders there are no classes and every label is -1."""
    for name in ("b.png", "a.png"):
        solid(tmp_path / name, (1, 2, 3))
    data = ImageFolderDataset(spec_of(tmp_path))
    assert [s.image for s in data.samples] == ["a.png", "b.png"]
    assert data.classes == () and data.labels.tolist() == [-1, -1]


def test_empty_or_missing_folder_is_a_one_line_dataset_error(tmp_path: Path) -> None:
    """A folder without images, or no folder, is a DatasetError on one line."""
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    for root, message in ((tmp_path / "empty", "dataset.root holds no images"),
                          (tmp_path / "missing", "dataset.root is not a directory")):
        with pytest.raises(DatasetError, match=message) as info:
            ImageFolderDataset(spec_of(root))
        assert "\n" not in str(info.value)


def test_open_dataset_gives_an_image_dataset_without_concepts(photos: Path) -> None:
    """open_dataset opens it as an ImageDataset that is not a ConceptDataset; a stage that
    needs concepts is refused."""
    data = open_dataset(spec_of(photos))
    assert isinstance(data, ImageDataset) and not isinstance(data, ConceptDataset)
    assert data.read_image(3).shape == (4, 6, 3)
    with pytest.raises(SpecError, match="dataset format 'images' has no concept labels"):
        open_concept_dataset(spec_of(photos))


def test_images_on_s3_equal_local(photos: Path, local_s3: LocalS3) -> None:
    """The same folder on S3 lists the same samples and classes and decodes the same images."""
    uri = local_s3.upload(photos, f"{local_s3.bucket('photos')}/set")
    remote, local = ImageFolderDataset(spec_of(uri)), ImageFolderDataset(spec_of(photos))
    assert remote.samples == local.samples and remote.classes == local.classes
    np.testing.assert_array_equal(remote.labels, local.labels)
    for i in range(len(local)):
        np.testing.assert_array_equal(remote.read_image(i), local.read_image(i))
