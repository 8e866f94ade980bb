"""A unit's activation map drawn on any image (NetDissect-Lite's most asked feature, the
inner-detectors seed's ``revealMask``).

The image is preprocessed as the job's model sees it (resized to ``size`` x ``size``), the
layer's output is read as (units, h, w) maps (:mod:`ray_dissect.models.layout`), and unit u's
map is upsampled to the input with bilinear interpolation (``align_corners=False``, as the unit
masks are). Two pictures per image: the map over the image (jet, half image:
:func:`ray_dissect.visualize.attribution.overlay`), and, given the unit's threshold, the image
kept where the upsampled map exceeds it and darkened elsewhere (the unit's NetDissect mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ray_dissect.errors import DatasetError, SpecError
from ray_dissect.models.crop import resize_crop
from ray_dissect.models.extract import Extractor
from ray_dissect.spec import ModelSpec

DARKEN = 0.25
"""Brightness kept outside the unit's mask in the revealed picture."""


@dataclass(frozen=True)
class UnitView:
    """One image seen through one unit.

    Attributes:
        image: (S, S, 3) uint8, the image as the network saw it (resized).
        heat: (S, S) float32, the unit's map upsampled to the input.
        overlay: (S, S, 3) uint8, the map in jet over the image.
        revealed: (S, S, 3) uint8, the image where ``heat > threshold``, darkened elsewhere
            (None without a threshold).
    """

    image: np.ndarray
    heat: np.ndarray
    overlay: np.ndarray
    revealed: np.ndarray | None


def read_rgb(path: Path) -> np.ndarray:
    """(h, w, 3) uint8 RGB of an image file.

    Raises:
        DatasetError: the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {str(path)!r}: {err}",
                           hint="pass PNG or JPEG files") from None


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) float32 maps -> (n, size, size) float32, bilinear, ``align_corners=False``."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def reveal(image: np.ndarray, heat: np.ndarray, threshold: float) -> np.ndarray:
    """(S, S, 3) uint8: ``image`` where ``heat > threshold``, times :data:`DARKEN` elsewhere."""
    inside = (heat > threshold)[..., None]
    return np.where(inside, image, np.rint(image * DARKEN)).astype(np.uint8)


def unit_views(model: ModelSpec, layer: str, unit: int, images: Sequence[np.ndarray],
               threshold: float | None = None) -> list[UnitView]:
    """Unit ``unit`` of ``layer`` on each of ``images`` ((h, w, 3) uint8 RGB).

    Raises:
        SpecError: ``unit`` is not a unit of the layer.
    """
    from PIL import Image

    from ray_dissect.visualize.attribution import overlay

    size = model.preprocess.size
    maps = Extractor(model, [layer])(list(images))[layer]
    if not 0 <= unit < maps.shape[1]:
        raise SpecError(f"unit {unit} of layer {layer!r}",
                        expected=f"0 <= unit < {maps.shape[1]}")
    heats = upsample(maps[:, unit], size)
    resize = model.preprocess.resize
    seen = [resize_crop(img, resize, size) if resize is not None
            else np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
            if img.shape[:2] != (size, size) else img for img in images]
    return [UnitView(img, heat, overlay(img, heat),
                     None if threshold is None else reveal(img, heat, threshold))
            for img, heat in zip(seen, heats, strict=True)]
