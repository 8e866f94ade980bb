"""silver-system's per-unit panel: a unit's top images, their discrepancy maps, and the maps
over the images with the unit's receptive-field box placed at each image's peak.

Drawn from ``receptive_fields.zarr``'s per-image maps (``<layer>+maps``, kept by the
``receptive_fields`` stage with ``image_maps``) for the units that have a page. Each tile is
:data:`TILE` px (the images as the network saw them, resized); the maps are min-max scaled
per map for display only and drawn in the heat palette; the overlay is the map in jet over the
image (:func:`ray_dissect.visualize.attribution.overlay`) with the box in red: side
``receptive_field.size``, centred at the image's peak centre plus the field's centroid offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect.datasets.base import BadSampleError
from ray_dissect.errors import StoreError
from ray_dissect.job.layout import layer_key
from ray_dissect.report import visual_tiles as vt
from ray_dissect.results import JobResults
from ray_dissect.storage import arrays

TILE = 96
"""Side of a panel tile in px."""
GAP = 2
BOX = np.array([255, 0, 0], np.uint8)


@dataclass(frozen=True)
class UnitMaps:
    """One unit's kept per-image maps: ``images`` (k,) int64 (-1 past the last), ``maps``
    (k, S, S) float32, ``centres`` (k, 2) float64 input-space peak centres."""

    images: np.ndarray
    maps: np.ndarray
    centres: np.ndarray


def kept_maps(results: JobResults, layer: str, units: tuple[int, int]) -> dict[int, UnitMaps]:
    """The kept per-image maps of the block's units ({} when the stage kept none)."""
    store, key = results.job.receptive_fields_zarr, layer_key(layer)
    done = arrays.done_shards(store, f"{key}+maps")
    if not done.size or not done.all():
        return {}
    try:
        chosen = arrays.open_array(store, f"{key}+units")[:].tolist()
    except StoreError:
        return {}
    rows = {u: r for r, u in enumerate(chosen) if units[0] <= u < units[1]}
    if not rows:
        return {}
    lo, hi = min(rows.values()), max(rows.values()) + 1
    read = {name: arrays.open_array(store, f"{key}+{name}")[lo:hi]
            for name in ("images", "maps", "centres")}
    return {u: UnitMaps(*(read[n][r - lo] for n in ("images", "maps", "centres")))
            for u, r in rows.items()}


def _view(results: JobResults, index: int, size: int) -> np.ndarray:
    try:
        return vt.network_view(results.view(index), size)
    except BadSampleError:
        return np.full((size, size, 3), 128, np.uint8)


def _resize(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((TILE, TILE), Image.Resampling.BILINEAR))


def box(size: float, centre: np.ndarray, offset: tuple[float, float], side: int
        ) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) inclusive pixel box of the field on a ``side``-px canvas, or
    None when it misses the canvas: side ``size`` centred at ``centre + offset``."""
    cy, cx = centre[0] + offset[0], centre[1] + offset[1]
    half = size / 2
    top, left = int(np.floor(cy - half + 0.5)), int(np.floor(cx - half + 0.5))
    span = max(round(size), 1)
    bottom, right = top + span - 1, left + span - 1
    if bottom < 0 or right < 0 or top >= side or left >= side:
        return None
    return max(top, 0), max(left, 0), min(bottom, side - 1), min(right, side - 1)


def draw_box(pixels: np.ndarray, where: tuple[int, int, int, int] | None) -> np.ndarray:
    """``pixels`` (H, W, 3) uint8 with a 1-px red outline of ``where`` (a copy)."""
    out = pixels.copy()
    if where is None:
        return out
    top, left, bottom, right = where
    out[top, left:right + 1] = out[bottom, left:right + 1] = BOX
    out[top:bottom + 1, left] = out[top:bottom + 1, right] = BOX
    return out


def panel(results: JobResults, unit_maps: UnitMaps, field: Any) -> np.ndarray:
    """(3 TILE + 2 GAP, k TILE + (k - 1) GAP, 3) uint8: images, maps, overlays with the box,
    one column per kept top image (white gaps)."""
    from ray_dissect.visualize.attribution import overlay

    size = unit_maps.maps.shape[-1]
    k = int((unit_maps.images >= 0).sum())
    out = np.full((3 * TILE + 2 * GAP, k * TILE + (k - 1) * GAP, 3), 255, np.uint8)
    for j in range(k):
        image = _view(results, int(unit_maps.images[j]), size)
        heat = unit_maps.maps[j]
        tiles = [_resize(t) for t in (image, vt.HOT[vt.display(heat)], overlay(image, heat))]
        tiles[2] = draw_box(tiles[2], _tile_box(field, unit_maps.centres[j], size))
        x = j * (TILE + GAP)
        for r, tile in enumerate(tiles):
            out[r * (TILE + GAP):r * (TILE + GAP) + TILE, x:x + TILE] = tile
    return out


def _tile_box(field: Any, centre: np.ndarray, size: int) -> tuple[int, int, int, int] | None:
    """The field's box on a tile: input coordinates scaled by TILE / size (pixel centres
    mapped, so the box stays centred); None without a field."""
    if field is None or field.offset is None or field.size <= 0:
        return None
    scale = TILE / size
    at = (np.asarray(centre, np.float64) + 0.5) * scale - 0.5
    return box(field.size * scale, at, (field.offset[0] * scale, field.offset[1] * scale), TILE)
