"""The Broden reader decodes hand-written directories exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.broden import Row, write_broden
from fixtures.s3 import LocalS3
from PIL import Image

from ray_dissect.datasets.base import BadSampleError
from ray_dissect.datasets.broden import BrodenDataset, read_vocabulary
from ray_dissect.errors import DatasetError
from ray_dissect.spec import DatasetSpec


def _spec(root: Path, **kw: object) -> DatasetSpec:
    return DatasetSpec(root=str(root), **kw)


class TestFourImages:
    def test_multi_layer_parts_and_whole_image_labels(self, four_images: Path) -> None:
        """Two part layers stay separate layers; scene/texture numbers are whole-image labels."""
        ds = BrodenDataset(_spec(four_images))
        assert len(ds) == 4 and ds.mask_shape == (4, 4)
        pixel, whole = ds.read_labels(0)
        assert pixel.shape == (4, 4, 4)  # color, object, part_1, part_2 in category order
        cats = [c for c, _ in ds.samples[0].pixel_layers]
        assert cats == ["color", "object", "part", "part"]
        np.testing.assert_array_equal(pixel[2][0], [3, 3, 0, 0])
        np.testing.assert_array_equal(pixel[3][:2, 1], [4, 4])
        assert whole.tolist() == [6]
        _, whole2 = ds.read_labels(2)
        assert sorted(whole2.tolist()) == [7, 8]

    def test_image_decodes_rgb(self, four_images: Path) -> None:
        """Images decode as (h, w, 3) uint8 RGB with the written values."""
        img = BrodenDataset(_spec(four_images)).read_image(1)
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
        assert img[2, 2, 0] == 250 and img[7, 7, 0] == 200

    def test_limit_and_categories(self, four_images: Path) -> None:
        """limit keeps the first rows; a category filter drops the other layers and rows."""
        assert len(BrodenDataset(_spec(four_images, limit=2))) == 2
        ds = BrodenDataset(_spec(four_images, categories=("texture",)))
        assert len(ds) == 2  # only rows 2 and 3 have textures
        pixel, whole = ds.read_labels(0)
        assert pixel.shape[0] == 0 and sorted(whole.tolist()) == [7, 8]

    def test_subset_filter(self, four_images: Path) -> None:
        """subset keeps rows whose image path contains the substring."""
        assert len(BrodenDataset(_spec(four_images, subset="img_3"))) == 1
        with pytest.raises(DatasetError, match="no index rows"):
            BrodenDataset(_spec(four_images, subset="ade20k"))


def test_label_values_above_255_use_green_channel(tmp_path: Path) -> None:
    """label = R + 256 * G."""
    img = np.zeros((4, 4, 3), np.uint8)
    layer = np.full((2, 2), 300)
    labels = {300: ("big", {"object": 1.0}), 1: ("x", {"object": 1.0})}
    root = write_broden(tmp_path / "b", [Row(img, layers={"object": [layer]})], labels)
    pixel, _ = BrodenDataset(_spec(root)).read_labels(0)
    assert pixel.max() == 300


def test_primary_category_is_largest_c_file_coverage(tmp_path: Path) -> None:
    """A label in two categories gets the one with the larger coverage (ties: the later)."""
    img = np.zeros((4, 4, 3), np.uint8)
    labels = {1: ("wood", {"material": 0.2, "texture": 0.7}),
              2: ("tie", {"object": 0.5, "part": 0.5})}
    root = write_broden(tmp_path / "b", [Row(img, layers={"object": [np.ones((2, 2), int)]})],
                        labels)
    vocab = read_vocabulary(root)
    assert vocab.category_of(1) == "texture"
    assert vocab.category_of(2) == "part"
    assert vocab.membership[1].sum() == 2


def test_wrong_sized_mask_is_a_bad_sample(four_images: Path) -> None:
    """A mask PNG of the wrong size raises BadSampleError naming the file and both sizes."""
    ds = BrodenDataset(_spec(four_images))
    name = ds.samples[3].pixel_layers[0][1]
    Image.fromarray(np.zeros((3, 5, 3), np.uint8)).save(four_images / "images" / name)
    with pytest.raises(BadSampleError, match="5x3, expected 4x4"):
        ds.read_labels(3)


def test_truncated_image_is_a_bad_sample(four_images: Path) -> None:
    """An unreadable image raises BadSampleError, not a crash."""
    ds = BrodenDataset(_spec(four_images))
    (four_images / "images" / ds.samples[0].image).write_bytes(b"\x89PNG\r\n")
    with pytest.raises(BadSampleError, match="unreadable image"):
        ds.read_image(0)


def test_missing_root_and_files(tmp_path: Path) -> None:
    """A missing root or label.csv is a one-line DatasetError with a hint."""
    with pytest.raises(DatasetError, match="make-dataset"):
        BrodenDataset(_spec(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"missing label\.csv"):
        BrodenDataset(_spec(tmp_path / "empty"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_gray_rgba_16bit_and_palette_images_convert(four_images: Path, mode: str) -> None:
    """Non-RGB images decode to (h, w, 3) uint8 with the same content where lossless."""
    ds = BrodenDataset(_spec(four_images))
    path = four_images / "images" / ds.samples[2].image  # a uniform image, R = 100
    if mode == "I;16":
        Image.fromarray(np.full((8, 8), 100 * 257, np.uint16)).save(path)
        want = 100
    elif mode == "L":
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(path)
        want = 100
    else:
        Image.open(path).convert(mode).save(path)
        want = 100
    img = ds.read_image(2)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    tolerance = 8 if mode == "P" else 0  # a palette quantises colours
    assert abs(int(img[0, 0, 0]) - want) <= tolerance


def test_a_dataset_on_s3_reads_like_the_local_copy(four_images: Path, local_s3: LocalS3) -> None:
    """Index, vocabulary, images and label layers read through s3:// equal the local ones;
    a missing or truncated object is a bad sample, not a crash."""
    uri = local_s3.upload(four_images, local_s3.bucket("broden") + "/four")
    local, remote = BrodenDataset(_spec(four_images)), BrodenDataset(DatasetSpec(root=uri))
    assert remote.samples == local.samples and remote.mask_shape == local.mask_shape
    assert remote.vocab.names == local.vocab.names
    assert np.array_equal(remote.vocab.primary, local.vocab.primary)
    for i in range(len(local)):
        assert np.array_equal(remote.read_image(i), local.read_image(i))
        for got, want in zip(remote.read_labels(i), local.read_labels(i), strict=True):
            assert np.array_equal(got, want)
    local_s3.fs.pipe_file(f"{uri}/images/{local.samples[0].image}"[5:], b"\x89PNG\r\n")
    with pytest.raises(BadSampleError, match="unreadable image"):
        remote.read_image(0)
    local_s3.fs.rm(f"{uri}/images/{local.samples[1].image}"[5:])
    with pytest.raises(BadSampleError, match="unreadable image"):
        remote.read_image(1)
    with pytest.raises(DatasetError, match="dataset root is not a directory"):
        BrodenDataset(DatasetSpec(root=uri + "-missing"))
