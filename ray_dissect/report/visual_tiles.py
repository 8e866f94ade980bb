"""Pixels of the visualisation stages' pictures, written as PNG (lossless, so a test can decode
them exactly). Pure numpy + PIL; normalisation is for display only (the stores keep raw maps).

- :func:`display` min-max scales a raw (..., H, W) map to uint8 (a constant map gives 0).
- :func:`heat_png`: an (H, W) uint8 map as a palette PNG whose pixel *indices* are the scaled
  values and whose palette is :data:`HOT` (black - red - yellow - white, luminance rising with
  the value, so it reads in grey too).
- :func:`grey_png`, :func:`rgb_png`: plain L / RGB PNGs. :func:`grid`: tiles (N, h, w[, C])
  with white gaps, each tile enlarged by an integer factor (nearest) to at least ``min_side``.
- :func:`network_view`: a dataset image as the network saw it (PIL bilinear resize to the
  input size, as :func:`ray_dissect.models.extract.normalise` does, before normalisation).

PNGs are written with fixed settings (no metadata, compress level 6): the same pixels give the
same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

EPS = 1e-12
GAP = 255


def _hot() -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], 1)
    return np.rint(255 * rgb).astype(np.uint8)


HOT = _hot()
"""(256, 3) uint8: the heat palette (matplotlib's ``hot``)."""


def display(maps: np.ndarray) -> np.ndarray:
    """Min-max per map over the last two axes: (..., H, W) float -> uint8 in 0..255
    (``rint(255 (x - min) / (max - min))``; non-finite values count as the minimum; a
    constant map gives 0)."""
    arr = np.asarray(maps, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, np.nan)
    low = np.nanmin(arr, axis=(-2, -1), keepdims=True) if arr.size else arr
    low = np.where(np.isfinite(low), low, 0.0)
    arr = np.where(np.isnan(arr), low, arr)
    span = arr.max(axis=(-2, -1), keepdims=True) - low
    scaled = np.where(span > EPS, (arr - low) / np.where(span > EPS, span, 1.0), 0.0)
    return np.rint(255.0 * scaled).astype(np.uint8)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes with fixed settings."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def heat_png(values: np.ndarray) -> bytes:
    """(H, W) uint8 -> palette PNG: indices = ``values``, palette :data:`HOT`."""
    arr = np.ascontiguousarray(values, dtype=np.uint8)
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
    img.putpalette(HOT.ravel().tolist())
    return encode_png(img)


def grey_png(values: np.ndarray) -> bytes:
    """(H, W) uint8 -> greyscale PNG."""
    return encode_png(Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8), mode="L"))


def rgb_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> RGB PNG."""
    return encode_png(Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="RGB"))


def rgba_png(pixels: np.ndarray, alpha: np.ndarray) -> bytes:
    """(H, W, 3) uint8 colours and (H, W) float alpha in [0, 1] -> RGBA PNG (alpha
    ``rint(255 * a)``)."""
    a = np.rint(255.0 * np.clip(np.nan_to_num(alpha, nan=0.0), 0.0, 1.0)).astype(np.uint8)
    rgba = np.concatenate([np.asarray(pixels, np.uint8), a[..., None]], axis=-1)
    return encode_png(Image.fromarray(np.ascontiguousarray(rgba), mode="RGBA"))


def to_uint8_rgb(values: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] (PRISM's ``rgb``) -> (H, W, 3) uint8, clipped."""
    arr = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)
    return np.rint(255.0 * np.clip(arr, 0.0, 1.0)).transpose(1, 2, 0).astype(np.uint8)


def filter_tiles(filters: np.ndarray) -> np.ndarray:
    """Conv filters (O, kh, kw, I) uint8 as tiles: (O, kh, kw, 3) RGB when I is 3, else the
    mean over I, (O, kh, kw) grey."""
    return filters if filters.shape[-1] == 3 else filters.mean(axis=-1).astype(np.uint8)


def enlarge(tiles: np.ndarray, min_side: int) -> np.ndarray:
    """(N, h, w[, C]) enlarged by the smallest integer factor giving sides >= ``min_side``."""
    factor = max(1, -(-min_side // max(1, min(tiles.shape[1:3]))))
    return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def grid(tiles: np.ndarray, ncol: int = 8, pad: int = 2, min_side: int = 1) -> np.ndarray:
    """Tiles (N, h, w[, C]) uint8 into one image with ``pad``-px white gaps, ``ncol`` per row
    (fewer when N is smaller); each tile enlarged (nearest) to at least ``min_side``."""
    imgs = enlarge(np.asarray(tiles, dtype=np.uint8), min_side)
    n, h, w = imgs.shape[:3]
    ncol = max(1, min(ncol, n))
    nrow = max(1, -(-n // ncol))
    out = np.full((nrow * (h + pad) - pad, ncol * (w + pad) - pad, *imgs.shape[3:]), GAP,
                  np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = imgs[i]
    return out


def network_view(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8, PIL bilinear (unchanged at that size)."""
    if image.shape[:2] == (size, size):
        return np.asarray(image, dtype=np.uint8)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def thumbnail(values: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 -> (side, side) uint8: PIL bilinear when shrinking, nearest when
    enlarging (no invented detail)."""
    img = Image.fromarray(np.ascontiguousarray(values, dtype=np.uint8), mode="L")
    shrink = min(values.shape) >= side
    return np.asarray(img.resize((side, side), Image.Resampling.BILINEAR if shrink
                                 else Image.Resampling.NEAREST))


def mask_image(mask: np.ndarray, image: np.ndarray, dim: float = 0.2) -> np.ndarray:
    """(H, W) bool on (H, W, 3) uint8: the image inside, ``dim`` x the image outside."""
    scale = np.where(mask, 1.0, dim)[..., None]
    return np.rint(image.astype(np.float64) * scale).astype(np.uint8)


def swatches(codes: list[int], side: int = 14, pad: int = 2) -> np.ndarray:
    """Quantised PRISM colour codes (``9 r + 3 g + b``, levels 0, 0.5, 1) as a row of
    squares, (side, n (side + pad) - pad, 3) uint8 (one white square when ``codes`` is empty)."""
    colours = [code_rgb(c) for c in codes] or [(255, 255, 255)]
    tiles = np.stack([np.full((side, side, 3), c, np.uint8) for c in colours])
    return grid(tiles, ncol=len(tiles), pad=pad)


def code_rgb(code: int) -> tuple[int, int, int]:
    """The RGB of a quantised colour code (levels 0, 0.5, 1 -> 0, 128, 255)."""
    levels = (code // 9, (code // 3) % 3, code % 3)
    return tuple(int(np.rint(127.5 * v)) for v in levels)  # type: ignore[return-value]
