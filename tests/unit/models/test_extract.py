"""Extraction of one batch: preprocessing and hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ray_dissect.errors import ModelError
from ray_dissect.models.extract import Extractor, preprocess
from ray_dissect.spec import ModelSpec, PreprocessSpec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")


def test_preprocess_normalises_and_resizes() -> None:
    """(x / 255 - mean) / std, channels first; images of another size are resized."""
    img = np.full((4, 4, 3), 255, np.uint8)
    out = preprocess([img, np.zeros((6, 6, 3), np.uint8)],
                     PreprocessSpec(size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0)))
    assert out.shape == (2, 3, 4, 4) and out.dtype == np.float32
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 0.5]
    assert out[1, 0, 0, 0] == -1.0


def test_extractor_returns_layer_outputs() -> None:
    """The planted red detector's pooled map is high on a red image only."""
    spec = ModelSpec(factory=f"{PLANTED}:color_detectors",
                     preprocess=PreprocessSpec(size=8, mean=(0, 0, 0), std=(1, 1, 1)))
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    out = Extractor(spec, ["pool", "conv"])([red, np.zeros_like(red)])
    assert out["pool"].shape == (2, 3, 4, 4) and out["conv"].shape == (2, 3, 8, 8)
    assert np.all(out["pool"][0, 0] == 1.0) and np.all(out["pool"][0, 1:] == 0.0)
    assert np.all(out["pool"][1] == 0.0)


def test_shared_module_is_refused() -> None:
    """A module called twice per forward cannot be dissected unambiguously."""
    spec = ModelSpec(factory="ray_dissect.zoo:efficientnet_lite0", kwargs={"pretrained": False},
                     preprocess=PreprocessSpec(size=32))
    with pytest.raises(ModelError, match="ran 2 times"):
        Extractor(spec, ["_swish"])([np.zeros((32, 32, 3), np.uint8)])


def _random_batch() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]


def _lite0(**numerics: bool) -> Extractor:
    spec = ModelSpec(factory="ray_dissect.zoo:efficientnet_lite0",
                     preprocess=PreprocessSpec(size=32), **numerics)
    return Extractor(spec, ["_blocks.3", "_bn1"])


def test_channels_last_keeps_values_and_layout() -> None:
    """channels_last puts the weights in NHWC, and the outputs come back NCHW-contiguous with
    the fp32 values (to float rounding)."""
    plain, nhwc = _lite0(), _lite0(channels_last=True)
    weight = nhwc.model._conv_stem.weight
    import torch

    assert weight.is_contiguous(memory_format=torch.channels_last)
    a, b = plain(_random_batch()), nhwc(_random_batch())
    for layer in a:
        assert b[layer].flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(b[layer], a[layer], rtol=1e-4, atol=1e-4)


def test_bf16_runs_in_bfloat16_and_returns_float32() -> None:
    """bf16 autocast changes the numbers (bfloat16 precision) but returns float32 close to
    the fp32 ones."""
    a, b = _lite0()(_random_batch()), _lite0(bf16=True)(_random_batch())
    for layer in a:
        assert b[layer].dtype == np.float32 and not np.array_equal(a[layer], b[layer])
        scale = np.abs(a[layer]).max()
        assert np.abs(b[layer] - a[layer]).max() < 0.1 * scale
