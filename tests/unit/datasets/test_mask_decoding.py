"""Broden mask files decode to red + 256 x green in any PNG mode, and the path confinement
with its cache of resolved directories decides as the uncached check does."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_dissect.datasets.base import OUTSIDE_ROOT, BadSampleError, confined
from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.spec import DatasetSpec


def _expected(path: Path) -> np.ndarray:
    """R + 256 G of the file as PIL converts it to RGB (the reference rule)."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA"])
def test_mask_layers_decode_in_every_mode(four_images: Path, mode: str) -> None:
    """Each layer file rewritten in ``mode`` (with green values: labels past 255) reads
    back as R + 256 G of its RGB conversion."""
    ds = BrodenDataset(DatasetSpec(root=str(four_images)))
    rng = np.random.default_rng(0)
    names = [name for _, name in ds.samples[0].pixel_layers]
    for name in names:
        rgb = rng.integers(0, 256, size=(*ds.mask_shape, 3), dtype=np.uint8)
        rgb[..., 1] %= 3  # labels up to 767
        Image.fromarray(rgb).convert(mode).save(four_images / "images" / name)
    fresh = BrodenDataset(DatasetSpec(root=str(four_images)))
    for name in names:  # the decoding rule itself (labels past the fixture's vocabulary)
        layer = np.full(ds.mask_shape, -1, np.int32)
        fresh._read_layer(name, layer)
        np.testing.assert_array_equal(layer, _expected(four_images / "images" / name))


def test_mask_of_another_size_is_a_bad_sample(four_images: Path) -> None:
    """A layer of the wrong size names its size and the expected one."""
    ds = BrodenDataset(DatasetSpec(root=str(four_images)))
    name = ds.samples[1].pixel_layers[0][1]
    Image.new("RGB", (5, 3)).save(four_images / "images" / name)
    with pytest.raises(BadSampleError, match=r"is 5x3, expected 4x4"):
        ds.read_labels(1)


def _decide(root: Path, name: str, resolved: dict[str, str] | None) -> str:
    try:
        return str(confined(root, name, resolved=resolved))
    except BadSampleError as err:
        return str(err)


def test_cached_confinement_decides_as_the_uncached_check(tmp_path: Path) -> None:
    """Plain files, ``..`` inside the root, a file symlink and a directory symlink out of
    the root, a directory symlink inside it, a missing file: the same path or the same
    refusal with and without the cache, asked twice (the second from the cache)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for d in (root / "sub", outside):
        (d / "m.png").write_bytes(b"x")
    os.symlink(outside / "m.png", root / "sub" / "file_link.png")
    os.symlink(outside, root / "dir_link")
    os.symlink(root / "sub", root / "inner_link")
    names = ["sub/m.png", "sub/../sub/m.png", "sub/file_link.png", "dir_link/m.png",
             "inner_link/m.png", "sub/missing.png", "sub/..", "dir_link/../sub/m.png"]
    resolved: dict[str, str] = {}
    for _ in range(2):
        for name in names:
            assert _decide(root, name, resolved) == _decide(root, name, None), name
    refused = [n for n in names if _decide(root, n, resolved).endswith(OUTSIDE_ROOT)]
    assert refused == ["sub/file_link.png", "dir_link/m.png", "dir_link/../sub/m.png"]
    assert resolved  # directories were kept
