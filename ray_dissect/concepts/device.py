"""Unit masks on a torch device (a GPU actor's), with the CPU path's exact results.

The pass :func:`ray_dissect.concepts.masks.range_masks` makes, done densely on the device:
a chunk of (image, unit) maps is upsampled there with ``F.interpolate(bilinear,
align_corners=False)``, each pixel is compared with every range's bounds, and the in-range
pixels are counted per (pair, image-local label set) by one ``bincount`` over integer keys
(exact and deterministic). A device's float32 upsampling may round differently from the
CPU's, but both lie within the tile walk's margin (``margin * max|corner|`` of the pixel's
source cell) of the exact value, so a pixel is decided on the device only when it is more
than twice that margin inside or outside a bound; a (pair, range) with any pixel closer, or a
map with a non-finite value, is recomputed on the CPU by the reference (torch's CPU
upsampling thresholded), as the CPU kernels do. Cells whose corners are all 0 are exactly 0
on every device and are compared with the bounds directly. Signatures are therefore identical
to the CPU path's on any device; ``device="cpu"`` runs the same code (tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ray_dissect.concepts.counting import ordered_signatures
from ray_dissect.concepts.kernels import group_sets
from ray_dissect.concepts.masks import Bounds, Entries, UnitMask, _dense_inside, firing_pairs
from ray_dissect.concepts.tiles import AxisTiles, Grid

PAIRS_ON_DEVICE = 1024
"""(image, unit) maps upsampled at once: 112 x 112 masks take ~100 MB of float64 per 1,024."""


def device_range_masks(acts: np.ndarray, ranges: Sequence[Bounds], set_ids: np.ndarray,
                       first_image: int, valid: np.ndarray, device: str | torch.device
                       ) -> list[list[UnitMask]]:
    """:func:`~ray_dissect.concepts.masks.range_masks` computed on ``device``: masks[r][u],
    identical array for array.

    Args:
        acts: (n, k, h, w) float32; ranges: per range (lo, hi, inclusive), lo and hi (k,) or
            (n, k) float64; set_ids: (n, sh, sw) int64 global label-set ids;
            valid: (n,) bool; device: a torch device ("cuda", "cuda:1", "cpu").
    """
    bounds, fires, images, units = firing_pairs(acts, ranges, valid)
    grid = Grid.make(acts.shape[2:], set_ids.shape[1:])
    pass_ = _DevicePass(grid, set_ids, torch.device(device))
    entries: list[Entries] = [[] for _ in bounds]
    for start in range(0, len(units), PAIRS_ON_DEVICE):
        at = np.arange(start, min(start + PAIRS_ON_DEVICE, len(units)))
        for r, found in enumerate(pass_.chunk(acts, images, units, at, bounds,
                                              [f[images[at], units[at]] for f in fires])):
            entries[r].append(found)
    k = acts.shape[1]
    return [[UnitMask(*sig) for sig in ordered_signatures(units, images, e, k, first_image)]
            for e in entries]


def _source_index(axis: AxisTiles, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(size,) int64 source indices i0, i1 of every output position's cell."""
    i0, i1 = np.zeros(size, np.int64), np.zeros(size, np.int64)
    i0[axis.pos[axis.ok]] = np.repeat(axis.i0, axis.n_real)
    i1[axis.pos[axis.ok]] = np.repeat(axis.i1, axis.n_real)
    return i0, i1


class _DevicePass:
    """The block's per-pixel tables on the device and the counting of chunks of pairs."""

    def __init__(self, grid: Grid, set_ids: np.ndarray, device: torch.device) -> None:
        self.grid, self.device = grid, device
        self.set_ids = set_ids.reshape(len(set_ids), -1)
        self.local, self.indptr, self.sets = group_sets(set_ids)
        self.width = int(np.diff(self.indptr).max(initial=1))
        self.local_t = torch.from_numpy(self.local).to(device)
        rows = _source_index(grid.rows, grid.shape[0])
        cols = _source_index(grid.cols, grid.shape[1])
        self.rows = [torch.from_numpy(a).to(device) for a in rows]
        self.cols = [torch.from_numpy(a).to(device) for a in cols]

    def _margin(self, maps: torch.Tensor) -> torch.Tensor:
        """(p, sh, sw) float64: twice the margin of each pixel's cell."""
        absm = maps.abs()
        corner = [absm[:, r][:, :, c] for r in self.rows for c in self.cols]
        biggest = torch.stack(corner).amax(dim=0).double()
        return 2.0 * self.grid.margin * biggest

    def chunk(self, acts: np.ndarray, images: np.ndarray, units: np.ndarray, at: np.ndarray,
              bounds: list[Bounds], fires: list[np.ndarray]
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per range, (pair, global set, count) (m,) int64 of the pairs ``at`` (p,)."""
        img, unit = images[at], units[at]
        maps_np = np.ascontiguousarray(acts[img, unit])
        maps = torch.from_numpy(maps_np).to(self.device)
        with torch.inference_mode():
            up = F.interpolate(maps[:, None], size=self.grid.shape, mode="bilinear",
                               align_corners=False)[:, 0].double()
            delta = self._margin(maps)
            finite = torch.isfinite(maps.reshape(len(at), -1)).all(dim=1).cpu().numpy()
            keys = (torch.arange(len(at), device=self.device)[:, None] * self.width
                    + self.local_t[torch.from_numpy(img).to(self.device)])
            out = []
            for (lo, hi, inc), fire in zip(bounds, fires, strict=True):
                counts, unsure = self._range(up, delta, keys, lo[img, unit], hi[img, unit],
                                             inc)
                redo = fire & (unsure | ~finite)
                counts[redo | ~fire] = 0
                out.append(self._entries(counts, at, img, unit, redo, acts, lo, hi, inc))
        return out

    def _range(self, up: torch.Tensor, delta: torch.Tensor, keys: torch.Tensor,
               lo: np.ndarray, hi: np.ndarray, inc: bool) -> tuple[np.ndarray, np.ndarray]:
        """(p, width) int64 counts of the pixels surely in (lo, hi) (p,), and (p,) bool pairs
        with a pixel the device cannot decide."""
        lo_t = torch.from_numpy(np.ascontiguousarray(lo, np.float64)).to(self.device)[:, None,
                                                                                      None]
        hi_t = torch.from_numpy(np.ascontiguousarray(hi, np.float64)).to(self.device)[:, None,
                                                                                      None]
        exact = ((up >= lo_t) & (up <= hi_t)) if inc else ((up > lo_t) & (up < hi_t))
        sure = (up - delta > lo_t) & (up + delta < hi_t)
        maybe = (up + delta >= lo_t) & (up - delta <= hi_t)
        zero = delta == 0
        inside = torch.where(zero, exact, sure)
        unsure = (maybe & ~sure & ~zero).flatten(1).any(dim=1)
        p = len(lo)
        counts = torch.bincount(keys.flatten()[inside.flatten()], minlength=p * self.width)
        return counts.reshape(p, self.width).cpu().numpy(), unsure.cpu().numpy()

    def _entries(self, counts: np.ndarray, at: np.ndarray, img: np.ndarray, unit: np.ndarray,
                 redo: np.ndarray, acts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 inc: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The chunk's nonzero counts as (pair, global set, count), the ``redo`` pairs
        recounted on the CPU by the reference."""
        q, s = np.nonzero(counts)
        pair, sets, found = [at[q]], [self.sets[self.indptr[img[q]] + s]], [counts[q, s]]
        sel = np.flatnonzero(redo)
        if len(sel):
            dense = _dense_inside(acts[img[sel], unit[sel]], lo[img[sel], unit[sel]],
                                  hi[img[sel], unit[sel]], self.grid.shape, inc)
            j, pix = np.nonzero(dense.reshape(len(sel), -1))
            stride = int(self.set_ids.max(initial=0)) + 1
            keys, n = np.unique(sel[j] * stride + self.set_ids[img[sel][j], pix],
                                return_counts=True)
            pair.append(at[keys // stride])
            sets.append(keys % stride)
            found.append(n)
        return (np.concatenate(pair).astype(np.int64), np.concatenate(sets).astype(np.int64),
                np.concatenate(found).astype(np.int64))
