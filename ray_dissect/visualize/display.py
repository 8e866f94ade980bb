"""Display helpers for attribution maps: min-max to uint8, the jet colour map, overlays,
Grad-CAM crops and tiling (normalisation is for display only; stores keep raw maps)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ray_dissect.errors import SpecError

_EPS = 1e-12


@dataclass(frozen=True)
class Crop:
    """A thresholded Grad-CAM crop of one image.

    Attributes:
        box: ``(top, left, bottom, right)`` of the mask's bounding box, bottom/right exclusive
            (so ``image[top:bottom, left:right]``); None when the mask is empty.
        mask: (H, W) bool, ``normalised map >= threshold``.
        image: the cropped image, (bottom-top, right-left[, C]) with the input's dtype;
            (0, 0[, C]) when the mask is empty.
    """

    box: tuple[int, int, int, int] | None
    mask: np.ndarray
    image: np.ndarray


def to_unit(maps: Tensor | np.ndarray) -> np.ndarray:
    """Min-max per map over the last two axes: (..., H, W) -> float64 in [0, 1]; constant
    maps give 0."""
    arr = maps.detach().float().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    arr = arr.astype(np.float64)
    low = arr.min(axis=(-2, -1), keepdims=True)
    span = arr.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > _EPS, (arr - low) / np.where(span > _EPS, span, 1.0), 0.0)


def to_display(maps: Tensor | np.ndarray) -> np.ndarray:
    """Min-max per image over the last two axes: (..., H, W) -> uint8; constant maps give 0."""
    return np.rint(255.0 * to_unit(maps)).astype(np.uint8)


def jet(values: np.ndarray) -> np.ndarray:
    """The classic jet colour map: (...) in [0, 1] -> (..., 3) float64 RGB in [0, 1]."""
    v = np.asarray(values, dtype=np.float64)[..., None]
    return np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)


def overlay(image: np.ndarray, heat: Tensor | np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Heat map blended on an image (pytorch-grad-cam ``show_cam_on_image``'s formula).

    ``jet(to_display(heat) / 255) * (1 - w) + image / 255 * w``, divided by its maximum.

    Args:
        image: (H, W, 3) uint8 RGB.
        heat: (H, W) raw map at the image's resolution (any scale).
        image_weight: w in [0, 1].

    Returns:
        (H, W, 3) uint8 RGB.
    """
    img = np.asarray(image)
    hmap = to_display(heat)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != hmap.shape or not (
            0.0 <= image_weight <= 1.0):
        raise SpecError("overlay needs an (H, W, 3) image, an (H, W) map and 0 <= w <= 1",
                        given=(img.shape, hmap.shape, image_weight),
                        expected="matching H, W", hint="raw maps are at input resolution")
    blend = (1.0 - image_weight) * jet(hmap / 255.0) + image_weight * img / 255.0
    return np.rint(255.0 * blend / max(float(blend.max()), _EPS)).astype(np.uint8)


def crop(heat: Tensor | np.ndarray, image: np.ndarray, threshold: float = 0.3) -> Crop:
    """Crops an image to the box of its normalised Grad-CAM map's ``>= threshold`` mask.

    Args:
        heat: (H, W) raw map; min-max normalised to [0, 1] here (a constant map gives 0).
        image: (H, W) or (H, W, C) array of any dtype.
        threshold: in [0, 1].

    Returns:
        The :class:`Crop` (box, (H, W) bool mask, cropped image).
    """
    hmap = heat.detach().float().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat)
    img = np.asarray(image)
    if hmap.ndim != 2 or img.shape[:2] != hmap.shape or not 0.0 <= threshold <= 1.0:
        raise SpecError("crop needs an (H, W) map, an (H, W[, C]) image and 0 <= threshold <= 1",
                        given=(hmap.shape, img.shape, threshold), expected="matching H, W")
    low, span = float(hmap.min()), float(hmap.max() - hmap.min())
    mask = ((hmap - low) / span if span > _EPS else np.zeros_like(hmap)) >= threshold
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return Crop(None, mask, img[:0, :0].copy())
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    return Crop(box, mask, img[box[0]:box[2], box[1]:box[3]].copy())


def tile(images: np.ndarray, ncol: int = 8, pad: int = 2) -> np.ndarray:
    """Tiles (N, h, w[, C]) images into one (rows*(h+pad)-pad, ncol*(w+pad)-pad[, C]) grid."""
    imgs = np.asarray(images)
    n, h, w = imgs.shape[:3]
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    grid = np.zeros((nrow * (h + pad) - pad, ncol * (w + pad) - pad, *imgs.shape[3:]), imgs.dtype)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = imgs[i]
    return grid
