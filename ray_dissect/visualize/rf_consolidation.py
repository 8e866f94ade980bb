"""Consolidating discrepancy maps into receptive fields (Zhou et al. 2015; design visual.md
section 1.4-1.5), the second half of :mod:`ray_dissect.visualize.receptive_fields`.

- :class:`RFAccumulator` / :func:`consolidate`: per unit, each top image's map translated so
  its centre (default: the input-space centre of the unit's clean peak; or
  :func:`peak_centres`) sits at ``(H // 2, W // 2)``, then averaged (Zhou). ``compat=True``:
  the seed's threshold / contour / stretched-box / sum / min-max chain (:func:`seed_chain`).
- :func:`rf_size`: the side of the square with the area of the region above half maximum, and
  that region's centroid offset from ``(H // 2, W // 2)``.

The accumulator streams image by image and merges shard by shard, so a stage can consolidate
maps in any grouping; the sums are float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ray_dissect.errors import SpecError

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)  # 4-neighbourhood
_SQUARE = np.ones((3, 3), dtype=bool)  # 8-neighbourhood


def peak_centres(maps: np.ndarray) -> np.ndarray:
    """(U, H, W) -> (U, 2) float64 centroid (row, col) of each map's maximum plateau."""
    maps = np.asarray(maps, dtype=np.float64)
    top = maps.reshape(len(maps), -1).max(1)[:, None, None]
    plateau = maps >= top - 1e-6 * np.maximum(np.abs(top), 1e-12)
    rows, cols = np.indices(maps.shape[1:])
    n = plateau.sum((1, 2))
    return np.stack([(plateau * rows).sum((1, 2)) / n, (plateau * cols).sum((1, 2)) / n], 1)


def recentre(image_map: np.ndarray, centre: Sequence[float]) -> np.ndarray:
    """(H, W) map translated so ``centre`` (rounded half up) lands on ``(H // 2, W // 2)``;
    what leaves the canvas is dropped, what enters is 0."""
    height, width = image_map.shape
    dy = height // 2 - math.floor(centre[0] + 0.5)
    dx = width // 2 - math.floor(centre[1] + 0.5)
    return _paste(np.zeros((height, width)), np.asarray(image_map, dtype=np.float64), dy, dx)


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> np.ndarray:
    """Writes patch with its corner at (top, left), clipped to the canvas; returns canvas."""
    h, w = patch.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


def seed_chain(image_map: np.ndarray, factor: float = 15.0, threshold: int = 25) -> np.ndarray:
    """The seed's per-map step (``max_extractor`` + ``calibrate``), with its (x, y) bug fixed.

    Grey = clip(trunc(factor d), 0, 255); peak = its argmax; values < threshold zeroed; the
    8-connected component holding the peak, holes filled, minus its border pixels (the pixels
    strictly inside cv2's external contour; scipy.ndimage stands in for cv2) keeps its grey
    values; their bounding box, minus the last row and column (PIL's box), is resized bicubically
    to L x L with ``L = max(dx, dy)`` and pasted with its centre at the image centre.

    Returns:
        (H, W) float64 grey levels in [0, 255]; zeros when nothing survives.
    """
    from scipy import ndimage  # lazy: only the compat chain needs it

    grey = np.clip(np.trunc(factor * np.asarray(image_map, dtype=np.float64)), 0, 255)
    peak = np.unravel_index(np.argmax(grey), grey.shape)
    labels, _ = ndimage.label(grey >= threshold, structure=_SQUARE)
    if labels[peak] == 0:
        return np.zeros_like(grey)
    region = ndimage.binary_fill_holes(labels == labels[peak])
    inside = ndimage.binary_erosion(region, structure=_CROSS, border_value=0)
    return _calibrate(np.where(inside, grey, 0.0))


def _calibrate(kept: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(kept)
    if ys.size == 0 or max(np.ptp(ys), np.ptp(xs)) == 0:
        return np.zeros_like(kept)
    side = int(max(np.ptp(ys), np.ptp(xs)))
    crop = kept[ys.min():max(ys.max(), ys.min() + 1), xs.min():max(xs.max(), xs.min() + 1)]
    patch = F.interpolate(torch.as_tensor(crop)[None, None], size=(side, side), mode="bicubic",
                          align_corners=False)[0, 0].clamp(0, 255).numpy()
    height, width = kept.shape
    return _paste(np.zeros_like(kept), patch, int(height / 2 - side / 2), int(width / 2 - side / 2))


class RFAccumulator:
    """Streams (image by image) and merges (shard by shard) the per-unit consolidation."""

    def __init__(self, units: int, height: int, width: int, *, compat: bool = False) -> None:
        """Empty sums for U units on an H x W canvas; compat: the seed's chain (sum, min-max)."""
        self.compat = compat
        self.sums = np.zeros((units, height, width), dtype=np.float64)
        self.counts = np.zeros(units, dtype=np.int64)

    def add(self, maps: np.ndarray, centres: np.ndarray | None = None,
            units: Sequence[int] | np.ndarray | None = None) -> None:
        """Adds one image's maps for the units that have it among their top images.

        Args:
            maps: (U, H, W) this image's :attr:`Discrepancy.maps`.
            centres: (U, 2) input-space centres (:attr:`Discrepancy.centres`, Zhou's choice);
                None: :func:`peak_centres` of the maps. Unused with compat.
            units: indices of the units to update; None: all.
        """
        maps = np.asarray(maps)
        if maps.shape != self.sums.shape:
            raise SpecError("discrepancy maps", given=maps.shape, expected=f"{self.sums.shape}")
        idx = np.arange(len(maps)) if units is None else np.asarray(units, dtype=np.int64)
        self.add_units(idx, maps[idx], None if centres is None else np.asarray(centres)[idx])

    def add_units(self, units: Sequence[int] | np.ndarray, maps: np.ndarray,
                  centres: np.ndarray | None = None) -> None:
        """Adds one map per listed unit (the maps of the units only, not of the whole layer).

        Args:
            units: (m,) indices of the units to update; a unit may appear more than once
                (one map of each of several images).
            maps: (m, H, W) their discrepancy maps, in the order of ``units``.
            centres: (m, 2) input-space centres; None: :func:`peak_centres`. Unused with compat.
        """
        idx = np.asarray(units, dtype=np.int64).reshape(-1)
        maps = np.asarray(maps)
        if maps.shape != (len(idx), *self.sums.shape[1:]):
            raise SpecError("discrepancy maps of the listed units", given=maps.shape,
                            expected=f"({len(idx)}, {self.sums.shape[1]}, {self.sums.shape[2]})")
        if not len(idx):
            return
        where = peak_centres(maps) if centres is None else np.asarray(centres)
        for u, image_map, centre in zip(idx, maps, where, strict=True):
            self.sums[u] += seed_chain(image_map) if self.compat else recentre(image_map, centre)
            self.counts[u] += 1

    def merge(self, other: RFAccumulator) -> RFAccumulator:
        """Adds another shard's sums (in place) and returns self."""
        if other.sums.shape != self.sums.shape or other.compat != self.compat:
            raise SpecError("RF shards to merge", given=other.sums.shape,
                            expected=f"{self.sums.shape}, compat={self.compat}")
        self.sums += other.sums
        self.counts += other.counts
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays: sums, counts, compat."""
        return {"sums": self.sums.copy(), "counts": self.counts.copy(),
                "compat": np.asarray(self.compat)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> RFAccumulator:
        """Rebuilds an accumulator saved by :meth:`state_dict`."""
        acc = cls(*np.asarray(state["sums"]).shape, compat=bool(state["compat"]))
        acc.sums = np.array(state["sums"], dtype=np.float64)
        acc.counts = np.array(state["counts"], dtype=np.int64)
        return acc

    def result(self) -> np.ndarray:
        """(U, H, W) float32: the mean of the re-centred maps (compat: the sum min-maxed to
        [0, 1] per unit); zeros for units without images."""
        if self.compat:
            low = self.sums.min((1, 2), keepdims=True)
            span = self.sums.max((1, 2), keepdims=True) - low
            scaled = np.divide(self.sums - low, span, out=np.zeros_like(self.sums),
                               where=span > 0)
            return scaled.astype(np.float32)
        counts = np.maximum(self.counts, 1)[:, None, None]
        return (self.sums / counts).astype(np.float32)


def consolidate(maps: np.ndarray, centres: np.ndarray | None = None, *,
                compat: bool = False) -> np.ndarray:
    """Each unit's receptive field (U, H, W) float32 (see :meth:`RFAccumulator.result`) from
    its K top images' maps (U, K, H, W), with centres (U, K, 2) in input space (None:
    :func:`peak_centres` of each map); ``compat``: the seed's chain."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise SpecError("maps to consolidate", given=maps.shape, expected="(U, K, H, W)")
    units, k, height, width = maps.shape
    acc = RFAccumulator(units, height, width, compat=compat)
    for j in range(k):
        acc.add(maps[:, j], None if centres is None else np.asarray(centres)[:, j])
    return acc.result()


@dataclass(frozen=True)
class RFSize:
    """Receptive-field size of one consolidated map.

    Attributes:
        side: sqrt(area), in input pixels (0 for an empty map).
        area: the number of pixels with value >= half the maximum.
        offset: (dy, dx) of that region's centroid from (H // 2, W // 2); NaN when empty.
    """

    side: float
    area: int
    offset: tuple[float, float]


def rf_size(rf: np.ndarray) -> RFSize:
    """Half-maximum size and centre offset of an (H, W) receptive field."""
    rf = np.asarray(rf, dtype=np.float64)
    top = rf.max()
    if not top > 0:
        return RFSize(side=0.0, area=0, offset=(math.nan, math.nan))
    rows, cols = np.nonzero(rf >= top / 2)
    offset = (float(rows.mean() - rf.shape[0] // 2), float(cols.mean() - rf.shape[1] // 2))
    return RFSize(side=math.sqrt(rows.size), area=int(rows.size), offset=offset)
