"""Resize-then-centre-crop (``preprocess.resize``), for images and, alike, concept masks.

torchvision's ``Resize(resize)`` + ``CenterCrop(size)``: an (H, W) image is resized so that
its shorter side is ``resize`` (the longer one ``int(resize * long / short)``), then the
central ``size`` x ``size`` window is kept (top ``round((rh - size) / 2)``, left likewise).

Concept masks cover the whole image at their own resolution (sh, sw); cropped alike they keep
that resolution and cover the crop: mask pixel (i, j) after cropping is the mask pixel under
the centre of input region (i, j) (rows ``i * size / sh`` to ``(i + 1) * size / sh`` of the
crop), found by nearest sampling at the same fraction of the image. So pixel correspondences
between the network's input and the masks hold as they do without a crop.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def crop_box(height: int, width: int, resize: int, size: int) -> tuple[int, int, int, int]:
    """Where the crop of an (height, width) image falls: (rh, rw, top, left), the resized
    image's size and the crop's corner in it (torchvision's rounding)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(resize * long / short)
    rh, rw = (new_long, resize) if width <= height else (resize, new_long)
    return rh, rw, round((rh - size) / 2.0), round((rw - size) / 2.0)


def resize_crop(image: np.ndarray, resize: int, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: PIL bilinear resize of the shorter side to
    ``resize`` (skipped when already so), then the centre crop."""
    h, w = image.shape[:2]
    rh, rw, top, left = crop_box(h, w, resize, size)
    if (rh, rw) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((rw, rh), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


def crop_indices(image_size: tuple[int, int], mask_shape: tuple[int, int], resize: int,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (sh,) and columns (sw,) int64 of the mask pixels the cropped mask takes."""
    rh, rw, top, left = crop_box(*image_size, resize, size)
    sh, sw = mask_shape
    rows = np.floor((top + (np.arange(sh) + 0.5) * size / sh) / rh * sh).astype(np.int64)
    cols = np.floor((left + (np.arange(sw) + 0.5) * size / sw) / rw * sw).astype(np.int64)
    return np.clip(rows, 0, sh - 1), np.clip(cols, 0, sw - 1)


def crop_masks(masks: np.ndarray, image_size: tuple[int, int], resize: int, size: int
               ) -> np.ndarray:
    """(..., sh, sw) masks or label maps of an image of ``image_size`` (H, W) -> the same
    shape and dtype, covering the centre crop (nearest sampling)."""
    rows, cols = crop_indices(image_size, masks.shape[-2:], resize, size)
    return np.ascontiguousarray(masks[..., rows[:, None], cols[None, :]])
