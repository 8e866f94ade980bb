"""Tiles: an image with the unit mask that was scored baked in (report.md §3.4). Pure numpy.

The mask shown is the mask that was scored: the unit's (h, w) map upsampled bilinearly
(``align_corners=False``, :func:`ray_dissect.concepts.masks.upsample`) to the concept-mask size
(sh, sw), tested as recorded (``lo < a < hi``, or ``lo <= a <= hi`` when inclusive; ``hi`` None
= +inf), then nearest-resized to the tile. Outside the mask the image is dimmed to ``dim``
(0.2, NetDissect-Lite's ``(mask * 0.8 + 0.2) * image``); a 1-px contour just outside the mask
(davidbau/dissect's border rule) is drawn in Okabe-Ito yellow with a 1-px black halo; a
concept's mask, when given, is outlined by a dashed sky-blue line on its inner boundary (dashes,
so that colour is not the only cue). Tiles are written as JPEG with fixed settings, so the same
input gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from ray_dissect.report.heat import row_scaled

CONTOUR_RGB = (0xF0, 0xE4, 0x42)
HALO_RGB = (0, 0, 0)
CONCEPT_RGB = (0x56, 0xB4, 0xE9)
GAP = 255  # white gaps between tiles
View = Literal["raw", "mask", "concept", "heat"]
VIEWS: tuple[View, ...] = ("mask", "raw", "concept", "heat")


@dataclass(frozen=True)
class TileStyle:
    """How tiles, strips and sprites look.

    Attributes:
        size: side of a full-size tile on unit pages, px.
        gap: white gap between tiles of a strip, px.
        thumb: side of a sprite tile (unit cards), px.
        thumb_gap: white gap between sprite tiles and rows, px.
        sprite_tiles: tiles per sprite row.
        dim: brightness kept outside the mask.
        contour: draw the contour (and halo) just outside the mask.
        views: which strips to write per row (``raw``, ``concept`` and ``heat`` feed the unit
            page's toggles; ``mask`` is the default view, ``heat`` without a dissection).
        quality: JPEG quality of strips.
        sprite_quality: WebP quality of the unit cards' sprites (64-px thumbnails).
        overlay: unit pages show each image once for the whole report (``img/src/<size>/
            <index>.webp``, the raw view) under transparent overlays per unit (the dimmed
            outside and contour; the concept outline), instead of three baked JPEG strips per
            row (report size: a unit page's tiles cost ~3 KB instead of ~90 KB).
    """

    size: int = 112
    gap: int = 2
    thumb: int = 64
    thumb_gap: int = 2
    sprite_tiles: int = 5
    dim: float = 0.2
    contour: bool = True
    views: tuple[View, ...] = VIEWS
    quality: int = 85
    sprite_quality: int = 60
    overlay: bool = True


DEFAULT_STYLE = TileStyle()
NDL_STYLE = TileStyle(size=224, gap=3, contour=False, views=("mask",), sprite_tiles=4,
                      sprite_quality=85, overlay=False)
"""NetDissect-Lite's strip: 224-px tiles, 3-px gaps, outside at 20 %, no contour."""
STYLES = {"default": DEFAULT_STYLE, "ndl": NDL_STYLE}


def range_mask(maps: np.ndarray, shape: tuple[int, int], lo: float | np.ndarray,
               hi: float | None, inclusive: bool) -> np.ndarray:
    """The scored masks of some maps of one unit in one activation range.

    Args:
        maps: (p, h, w) float32 activation maps.
        shape: (sh, sw) concept-mask size.
        lo, hi: range bounds as recorded (``hi`` None = +inf), compared in float64; ``lo``
            may be (p, 1, 1), a bound per map (the per-image rule).
        inclusive: ``lo <= a <= hi`` instead of ``lo < a < hi``.

    Returns:
        (p, sh, sw) bool.
    """
    from ray_dissect.concepts.masks import upsample

    up = upsample(np.asarray(maps, dtype=np.float32), shape).astype(np.float64)
    top = np.inf if hi is None else float(hi)
    if inclusive:
        return (up >= lo) & (up <= top)
    return (up > lo) & (up < top)


def resize_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (..., sh, sw) masks to (..., size, size), sampling pixel
    centres."""
    sh, sw = mask.shape[-2:]
    rows = np.minimum(((np.arange(size) + 0.5) * sh / size).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * sw / size).astype(np.int64), sw - 1)
    return mask[..., rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, bilinear (PIL)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _dilate(mask: np.ndarray) -> np.ndarray:
    """8-neighbour (3 x 3) dilation of (..., H, W) bool masks by one pixel."""
    rows = mask.copy()
    rows[..., 1:, :] |= mask[..., :-1, :]
    rows[..., :-1, :] |= mask[..., 1:, :]
    out = rows.copy()
    out[..., :, 1:] |= rows[..., :, :-1]
    out[..., :, :-1] |= rows[..., :, 1:]
    return out


def contour(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 1-px contour just outside (..., H, W) bool masks and the 1-px halo outside it.

    Returns:
        contour, halo: (..., H, W) bool, disjoint from each other and from the mask.
    """
    ring = _dilate(mask) & ~mask
    halo = _dilate(mask | ring) & ~(mask | ring)
    return ring, halo


def dashed_boundary(mask: np.ndarray, dash: int = 3) -> np.ndarray:
    """The inner boundary of (..., H, W) bool masks, drawn as dashes of ``dash`` px (bool)."""
    boundary = mask & _dilate(~mask)
    yy, xx = np.indices(mask.shape[-2:])
    return boundary & (((yy + xx) // dash) % 2 == 0)


@dataclass(frozen=True)
class Source:
    """One image at tile size, and its dimmed copy (computed once, reused by every unit
    whose row shows the image).

    Attributes:
        base: (size, size, 3) uint8, the image resized (bilinear).
        dimmed: (size, size, 3) uint8, ``rint(base * dim)``.
    """

    base: np.ndarray
    dimmed: np.ndarray


def source(image: np.ndarray, size: int, style: TileStyle) -> Source:
    """(H, W, 3) uint8 -> its :class:`Source` at ``size`` px."""
    base = resize_image(image, size)
    dim = np.clip(np.rint(np.arange(256, dtype=np.float32) * np.float32(style.dim)), 0, 255)
    return Source(base, np.take(dim.astype(np.uint8), base))


def compose_row(sources: Sequence[Source], masks: np.ndarray | None,
                concepts: np.ndarray | None, views: Sequence[View],
                style: TileStyle, heat: np.ndarray | None = None) -> dict[View, np.ndarray]:
    """The tiles of one row in each view.

    Args:
        sources: k images at tile size (:func:`source`).
        masks: (k, sh, sw) bool scored unit masks, or None (nothing dimmed).
        concepts: (k, sh, sw) bool concept masks outlined in the ``concept`` view, or None.
        views: ``raw`` (the image), ``mask`` (dimmed outside the mask, contour),
            ``concept`` (the mask view plus the dashed concept outline) and/or ``heat`` (the
            raw image under the heat palette).
        heat: (k, size, size) uint8 :func:`heat_levels` for the ``heat`` view, or None.

    Returns:
        per view, (k, size, size, 3) uint8.
    """
    base = np.stack([src.base for src in sources])
    out: dict[View, np.ndarray] = {"raw": base}
    if heat is not None:
        out["heat"] = blend(base, heat, heat_palette())
    if masks is None:
        return {v: out.get(v, base) for v in views}
    inside = resize_nearest(masks, base.shape[1])
    shown = np.stack([src.dimmed for src in sources])
    np.copyto(shown, base, where=np.repeat(inside[..., None], 3, axis=-1))  # no broadcast: 2x
    if style.contour:
        ring, halo = contour(inside)
        _paint(shown, halo, HALO_RGB)
        _paint(shown, ring, CONTOUR_RGB)
    out["mask"] = shown
    if "concept" in views:
        with_concept = shown.copy()
        if concepts is not None:
            _paint(with_concept, dashed_boundary(resize_nearest(concepts, base.shape[1])),
                   CONCEPT_RGB)
        out["concept"] = with_concept
    return {v: out.get(v, base) for v in views}


def blend(base: np.ndarray, indices: np.ndarray,
          palette: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """Palette overlays composited on images (source-over, as a browser draws them).

    Args:
        base: (..., H, W, 3) uint8 images.
        indices: (..., H, W) uint8 palette indices.

    Returns:
        (..., H, W, 3) uint8, ``rint(base * (1 - a) + rgb * a)``, ``a = alpha / 255``.
    """
    table = np.asarray(palette, dtype=np.float64)
    rgb, alpha = table[indices, :3], table[indices, 3:] / 255.0
    return np.rint(base * (1.0 - alpha) + rgb * alpha).astype(np.uint8)


def compose_tile(image: np.ndarray, mask: np.ndarray | None, concept: np.ndarray | None,
                 size: int, view: View, style: TileStyle) -> np.ndarray:
    """One tile (see :func:`compose_row`): (size, size, 3) uint8."""
    row = compose_row([source(image, size, style)], None if mask is None else mask[None],
                      None if concept is None else concept[None], [view], style)
    return row[view][0]


def _paint(pixels: np.ndarray, where: np.ndarray, rgb: tuple[int, int, int]) -> None:
    """Set (..., H, W, 3) ``pixels`` to ``rgb`` where the (..., H, W) mask holds, in place
    (one channel at a time: assigning a tuple through a boolean index is slow)."""
    for c in range(3):
        pixels[..., c][where] = rgb[c]


def strip(tiles: np.ndarray | Sequence[np.ndarray], size: int, gap: int) -> np.ndarray:
    """Tiles side by side with white gaps: (size, n * size + (n - 1) * gap, 3) uint8."""
    n = max(len(tiles), 1)
    out = np.full((size, n * size + (n - 1) * gap, 3), GAP, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        out[:, i * (size + gap): i * (size + gap) + size] = tile
    return out


def sprite(rows: Sequence[np.ndarray | Sequence[np.ndarray]], style: TileStyle) -> np.ndarray:
    """Rows of thumbnails (at most ``sprite_tiles`` each) stacked with white gaps.

    Returns:
        (r * thumb + (r - 1) * gap, n * thumb + (n - 1) * gap, 3) uint8, n = the longest row.
    """
    n = max(min(len(r), style.sprite_tiles) for r in rows)
    t, g = style.thumb, style.thumb_gap
    out = np.full((len(rows) * t + (len(rows) - 1) * g, n * t + (n - 1) * g, 3), GAP,
                  dtype=np.uint8)
    for r, row in enumerate(rows):
        line = strip(row[: style.sprite_tiles], t, g)
        out[r * (t + g): r * (t + g) + t, : line.shape[1]] = line
    return out


OVERLAY_CLEAR, OVERLAY_DIM, OVERLAY_CONTOUR, OVERLAY_HALO, OVERLAY_CONCEPT = range(5)
OVERLAY_RGBA = ((0, 0, 0, 0), (0, 0, 0, 204), (*CONTOUR_RGB, 255), (*HALO_RGB, 255),
                (*CONCEPT_RGB, 255))
"""Overlay palette: clear, black at alpha 204 (the image shows at 51/255 = 0.2, ``dim``),
contour, halo, concept outline."""


def overlay_indices(masks: np.ndarray | None, concepts: np.ndarray | None, size: int,
                    style: TileStyle) -> tuple[np.ndarray, np.ndarray | None]:
    """Palette indices (:data:`OVERLAY_RGBA`) of one row's overlays, drawn over the raw tiles
    they give the ``mask`` and ``concept`` views of :func:`compose_row`.

    Args:
        masks: (k, sh, sw) bool scored unit masks (None: nothing dimmed).
        concepts: (k, sh, sw) bool concept masks, or None (no concept overlay).

    Returns:
        mask overlay (k, size, size) uint8, concept overlay (k, size, size) uint8 or None.
    """
    if masks is None:
        return np.zeros((0, size, size), np.uint8), None
    inside = resize_nearest(masks, size)
    out = np.where(inside, OVERLAY_CLEAR, OVERLAY_DIM).astype(np.uint8)
    if style.contour:
        ring, halo = contour(inside)
        out[halo], out[ring] = OVERLAY_HALO, OVERLAY_CONTOUR
    if concepts is None:
        return out, None
    line = dashed_boundary(resize_nearest(concepts, size))
    return out, np.where(line, OVERLAY_CONCEPT, OVERLAY_CLEAR).astype(np.uint8)


HEAT_LEVELS = 32
HEAT_ALPHA = 153
"""Heat overlays: the row's maps in ``HEAT_LEVELS`` jet steps at alpha 153/255 (0.6); palette
index 0 is clear (non-finite values), index 1 + j the level j."""


def heat_palette() -> tuple[tuple[int, int, int, int], ...]:
    """The heat overlay's RGBA palette: clear, then jet at ``j / (HEAT_LEVELS - 1)``."""
    from ray_dissect.visualize.display import jet

    rgb = np.rint(255.0 * jet(np.arange(HEAT_LEVELS) / (HEAT_LEVELS - 1))).astype(int)
    return ((0, 0, 0, 0), *((int(r), int(g), int(b), HEAT_ALPHA) for r, g, b in rgb))


def heat_levels(maps: np.ndarray, size: int) -> np.ndarray:
    """The heat overlay of one row: each (h, w) map upsampled to the tile (bilinear,
    ``align_corners=False``), min-max scaled over the whole row (so tiles compare), and cut
    into :data:`HEAT_LEVELS` equal steps.

    Args:
        maps: (k, h, w) float32 activation maps of one unit.

    Returns:
        (k, size, size) uint8 palette indices of :func:`heat_palette` (0 where non-finite).
    """
    from ray_dissect.concepts.masks import upsample

    up = upsample(np.asarray(maps, dtype=np.float32), (size, size))
    scaled, fin = row_scaled(up)
    level = np.minimum(np.floor(scaled * HEAT_LEVELS), HEAT_LEVELS - 1)
    return np.where(fin, level + 1, 0).astype(np.uint8)


def encode_overlay(indices: np.ndarray, size: int, gap: int,
                   palette: Sequence[tuple[int, int, int, int]] = OVERLAY_RGBA) -> bytes:
    """(k, size, size) palette indices -> one transparent strip (k tiles, clear ``gap``-px
    gaps; ``palette``: RGBA per index, index 0 clear) as lossless WebP (the same pixels as a
    PNG, ~1/3 smaller; fixed settings, same input same bytes)."""
    k = max(len(indices), 1)
    pixels = np.zeros((size, k * size + (k - 1) * gap), np.uint8)
    for i, tile in enumerate(indices):
        pixels[:, i * (size + gap): i * (size + gap) + size] = tile
    image = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())
    image.putpalette([c for rgba in palette for c in rgba[:3]])
    image.info["transparency"] = bytes(rgba[3] for rgba in palette)
    buffer = io.BytesIO()
    image.convert("RGBA").save(buffer, format="WEBP", lossless=True, quality=20, method=1,
                               exact=True)  # ~1 ms a strip; more effort: 1-2 % smaller, 300x slower
    return buffer.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes with fixed settings (same pixels, same bytes; optimised
    Huffman tables: ~11 % smaller, the same pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=2,
                                 optimize=True, progressive=False)
    return buffer.getvalue()


def encode_webp(pixels: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 -> lossy WebP bytes with fixed settings (same pixels, same bytes; ~1/3
    smaller than a JPEG of the same quality). Effort 5: half the time of 6 for files ~1-2 %
    larger (112-px tiles: 1.1 against 2.2 ms, 10-tile sprites 12.6 against 26.4 ms)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", quality=quality, method=5)
    return buffer.getvalue()


def formula_mask(node: Any, pixel: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """Where a formula holds on one image.

    Args:
        node: a formula tree as recorded (``op`` leaf/not/and/or with ``concept``, ``child``,
            ``left``, ``right``; records' FormulaNode or its dict form).
        pixel: (L, sh, sw) int global label numbers of the image's pixel layers.
        whole: (n,) int whole-image label numbers (they cover every pixel).

    Returns:
        (sh, sw) bool.
    """
    def get(key: str) -> Any:
        return node[key] if isinstance(node, dict) else getattr(node, key)

    op = get("op")
    if op == "leaf":
        c = int(get("concept"))
        present = (pixel == c).any(axis=0) if pixel.shape[0] else np.zeros(pixel.shape[1:], bool)
        return present | bool((np.asarray(whole) == c).any())
    if op == "not":
        return ~formula_mask(get("child"), pixel, whole)
    left, right = formula_mask(get("left"), pixel, whole), formula_mask(get("right"), pixel, whole)
    return (left & right) if op == "and" else (left | right)


def tile_iou(mask: np.ndarray, concept: np.ndarray) -> float:
    """IoU of two (sh, sw) bool masks on one image (0 when both are empty)."""
    union = int((mask | concept).sum())
    return int((mask & concept).sum()) / union if union else 0.0
