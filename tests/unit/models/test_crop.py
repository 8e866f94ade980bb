"""``preprocess.resize``: resize-then-centre-crop of images (torchvision's Resize + CenterCrop)
and of concept masks alike, checked against torchvision and by a dense pixel correspondence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from ray_dissect.errors import SpecError
from ray_dissect.models.crop import crop_masks, resize_crop
from ray_dissect.models.device import _normalised
from ray_dissect.models.extract import normalise
from ray_dissect.pipeline.table import stage_hashes
from ray_dissect.spec import PreprocessSpec, parse_spec

RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}


@pytest.mark.parametrize(("shape", "resize", "size"), [((120, 200), 64, 56), ((200, 120), 64, 56),
                                                       ((97, 131), 50, 37), ((64, 64), 64, 48)])
def test_resize_crop_equals_torchvision(shape: tuple[int, int], resize: int, size: int) -> None:
    """Same pixels as torchvision's Resize(resize) + CenterCrop(size) on the PIL image."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size)])(
        Image.fromarray(image))
    np.testing.assert_array_equal(resize_crop(image, resize, size), np.asarray(want))


def _coded(height: int, width: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of (height / cell) x (width / cell) flat cells, cell k coloured
    (k % 256, k // 256, 0), and its mask (one label per cell, k)."""
    mh, mw = height // cell, width // cell
    mask = np.arange(mh * mw, dtype=np.int32).reshape(mh, mw)
    big = np.kron(mask, np.ones((cell, cell), dtype=np.int32))
    image = np.stack([big % 256, big // 256, np.zeros_like(big)], axis=-1).astype(np.uint8)
    return image, mask


@pytest.mark.parametrize(("shape", "resize", "size", "cell"),
                         [((160, 240), 160, 80, 2), ((240, 160), 160, 80, 2),
                          ((192, 288), 96, 64, 8), ((288, 192), 96, 64, 8)])
def test_cropped_mask_pixel_ij_is_the_input_region_ij(shape: tuple[int, int], resize: int,
                                                     size: int, cell: int) -> None:
    """Dense: for every pixel (i, j) of the cropped mask, the network input's pixel at the
    centre of region (i, j) (rows i * size / sh .. (i + 1) * size / sh) has that mask
    pixel's colour. Cells of 2 px without a resize (one mask pixel per 2 x 2 image pixels,
    so a one-pixel shift of the window fails); with a 2x resize, 8-px cells and centres
    within 1.5 px of a cell edge (where bilinear blends two cells) left out."""
    image, mask = _coded(*shape, cell=cell)
    scale = 1 if min(shape) == resize else 2
    spec = PreprocessSpec(size=size, resize=resize, **RAW)
    x = np.empty((3, size, size), np.float32)
    normalise(image, spec, x)
    seen = np.rint(x * 255).astype(np.int64)
    cropped = crop_masks(mask, shape, resize, size)
    assert cropped.shape == mask.shape
    sh, sw = mask.shape
    rows = np.floor((np.arange(sh) + 0.5) * size / sh).astype(int)
    cols = np.floor((np.arange(sw) + 0.5) * size / sw).astype(int)
    h, w = shape
    top, left = (round((resize * h // min(shape) - size) / 2), round((resize * w // min(shape)
                                                                      - size) / 2))
    safe_r = _far_from_edges(rows + top, cell // scale)
    safe_c = _far_from_edges(cols + left, cell // scale)
    checked = 0
    for i in np.flatnonzero(safe_r if scale > 1 else np.ones(sh, bool)):
        for j in np.flatnonzero(safe_c if scale > 1 else np.ones(sw, bool)):
            assert seen[0, rows[i], cols[j]] + 256 * seen[1, rows[i], cols[j]] \
                == cropped[i, j], (i, j)
            checked += 1
    assert checked >= sh * sw // 4
    assert 0 < len(np.unique(cropped)) < mask.size  # a window of the mask, not all of it


def _far_from_edges(pixels: np.ndarray, cell: int) -> np.ndarray:
    """Whether each pixel's centre lies at least 1.5 px from a multiple of ``cell``."""
    offset = (pixels + 0.5) % cell
    return np.minimum(offset, cell - offset) >= 1.5


def test_device_path_crops_like_the_cpu_path() -> None:
    """The GPU decode path's resize-and-crop (torch, antialiased bilinear, here on the CPU)
    matches PIL's to within interpolation differences, on the same window."""
    yy, xx = np.mgrid[0:90, 0:150]
    image = np.stack([yy * 2, xx, (yy + xx) % 256], axis=-1).astype(np.uint8)
    spec = PreprocessSpec(size=40, resize=48, **RAW)
    cpu = np.empty((3, 40, 40), np.float32)
    normalise(image, spec, cpu)
    dev = _normalised(torch.from_numpy(image.transpose(2, 0, 1).copy()), spec).numpy()
    assert dev.shape == cpu.shape
    assert np.abs(dev - cpu).mean() < 0.01


def test_spec_field_default_keeps_the_hash_and_refuses_a_crop_larger_than_resize() -> None:
    """At its default the field is not hashed (old specs keep their hash); a crop larger than
    the resized side and a crop with the blackout study are refused in one line."""
    base = {"name": "c", "model": {"factory": "x.py:f"}, "layers": ["pool"],
            "dataset": {"root": "/tmp/none"}}
    spec = parse_spec(base)
    assert "resize" not in spec.hash_data()["model"]["preprocess"]
    cropped = parse_spec({**base, "model": {"factory": "x.py:f",
                                            "preprocess": {"size": 224, "resize": 256}}})
    assert cropped.spec_hash() != spec.spec_hash()
    before, after = stage_hashes(spec), stage_hashes(cropped)
    assert before["concepts"] != after["concepts"]  # the index holds the cropped masks
    assert before["activations"] != after["activations"]
    with pytest.raises(SpecError, match="resize 200 is smaller than the crop size 224"):
        parse_spec({**base, "model": {"factory": "x.py:f",
                                      "preprocess": {"size": 224, "resize": 200}}})
    with pytest.raises(SpecError, match="concept_blackout does not support"):
        parse_spec({**base, "model": {"factory": "x.py:f", "preprocess": {"resize": 256}},
                    "studies": {"concept_blackout": {}}})
