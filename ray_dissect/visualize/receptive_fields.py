"""Empirical receptive fields by occlusion (Zhou et al. 2015; design visual.md section 1).

For one image x (in network-input space: after resize and crop; the occluder's fill is given in
the same units) and every unit u of a layer at once:

1. :func:`occluded_batches`: copies of x with one o x o window replaced by seeded noise, at the
   origins ``(i s, j s)`` for ``i < 1 + (H - o) // s`` and ``j < 1 + (W - o) // s`` (Zhou's
   dense grid; 72 x 72 = 5,184 windows for 224 / 11 / 3). Like the seed and Zhou, the
   right/bottom remainder ``(H - o) % s`` is not occluded unless ``cover_remainder=True`` adds
   one window flush with the edge.
2. :func:`discrepancy_maps`: per window and unit the change ``d = A_u(x)[p*] - A_u(x~)[p*]`` at
   the position p* of the unit's maximum on the clean image (Zhou's "change in activation" of
   the unit whose receptive field is then re-centred on p*; the paper leaves the scalar open).
   ``compat=True`` gives the seed's ``max_ij (A_u(x) - A_u(x~))`` and its overwrite painting.
   Maps are painted over the input by averaging the windows that cover each pixel (captum's
   rule; the seed let later windows overwrite earlier ones). No x15 or uint8 here.
3. :class:`RFAccumulator` / :func:`consolidate` (in :mod:`.rf_consolidation`, re-exported
   here): per unit, each top image's map translated so its centre (default: the input-space
   centre of p*; or :func:`peak_centres`) sits at ``(H // 2, W // 2)``, then averaged.
   ``compat=True``: the seed's threshold / contour / stretched-box / sum / min-max chain
   (:func:`seed_chain`).
4. :func:`rf_size` (also there): the side of the square with the area of the region above half
   maximum, and that region's centroid offset from ``(H // 2, W // 2)``.

Cost per image: ``n = (1 + (H - o) // s) * (1 + (W - o) // s)`` occluded forwards of the model
truncated at the layer, plus one clean forward, whatever the number of units: schedule by image
(the union of the units' top images), not by unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ray_dissect.errors import ModelError, SpecError
from ray_dissect.visualize.rf_consolidation import (
    RFAccumulator,
    RFSize,
    consolidate,
    peak_centres,
    recentre,
    rf_size,
    seed_chain,
)

__all__ = [
    "Discrepancy", "FieldMap", "NoiseFill", "OcclusionGrid", "RFAccumulator", "RFSize",
    "Truncated", "consolidate", "discrepancy_maps", "occluded_batches", "paint", "peak_centres",
    "recentre", "rf_size", "seed_chain", "window_noise",
]

log = logging.getLogger(__name__)

Truncated = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class OcclusionGrid:
    """The occluder windows over an H x W input, as a product of row and column origins."""

    height: int
    width: int
    size: int = 11
    stride: int = 3
    cover_remainder: bool = False

    def __post_init__(self) -> None:
        if self.stride < 1 or not 1 <= self.size <= min(self.height, self.width):
            raise SpecError("occluder", given=(self.size, self.stride),
                            expected=f"size in [1, {min(self.height, self.width)}], stride >= 1")

    @property
    def rows(self) -> np.ndarray:
        """(n_y,) int64 row origins."""
        return _axis_origins(self.height, self.size, self.stride, self.cover_remainder)

    @property
    def cols(self) -> np.ndarray:
        """(n_x,) int64 column origins."""
        return _axis_origins(self.width, self.size, self.stride, self.cover_remainder)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_y, n_x), the window grid."""
        return len(self.rows), len(self.cols)

    @property
    def n_windows(self) -> int:
        """n_y * n_x: the number of occluded forwards per image."""
        return self.shape[0] * self.shape[1]

    def origins(self) -> np.ndarray:
        """(n_windows, 2) int64 (row, col) top-left corners, row-major."""
        r, c = np.meshgrid(self.rows, self.cols, indexing="ij")
        return np.stack([r.ravel(), c.ravel()], axis=1)


def _axis_origins(length: int, size: int, stride: int, cover_remainder: bool) -> np.ndarray:
    origins = np.arange(1 + (length - size) // stride, dtype=np.int64) * stride
    if cover_remainder and origins[-1] + size < length:
        origins = np.append(origins, length - size)
    return origins


@dataclass(frozen=True)
class NoiseFill:
    """Per-pixel, per-channel Gaussian fill, clipped; default the seed's N(120, 60) on [0, 255]
    expressed on [0, 1] (not floored to integer levels)."""

    mean: tuple[float, float, float] = (120 / 255,) * 3
    std: tuple[float, float, float] = (60 / 255,) * 3
    low: tuple[float, float, float] = (0.0,) * 3
    high: tuple[float, float, float] = (1.0,) * 3

    @classmethod
    def constant(cls, value: float) -> NoiseFill:
        """A flat occluder of one value (std 0), e.g. 0 for black."""
        return cls((value,) * 3, (0.0,) * 3, (value,) * 3, (value,) * 3)

    def normalized(self, mean: Sequence[float], std: Sequence[float]) -> NoiseFill:
        """The same fill for inputs normalised as ``(x - mean) / std`` per channel."""
        def to(values: Sequence[float], shift: Sequence[float]) -> tuple[float, float, float]:
            a, b, c = ((v - m) / s for v, m, s in zip(values, shift, std, strict=True))
            return a, b, c
        return NoiseFill(to(self.mean, mean), to(self.std, (0.0,) * 3), to(self.low, mean),
                         to(self.high, mean))

    def sample(self, n: int, size: int, generator: torch.Generator) -> Tensor:
        """(n, 3, size, size) float32 on CPU."""
        z = torch.randn((n, 3, size, size), generator=generator, dtype=torch.float64)
        mean, std, low, high = (torch.tensor(v).view(1, 3, 1, 1)
                                for v in (self.mean, self.std, self.low, self.high))
        return (mean + std * z).clamp(low, high).float()


def _image_seed(seed: int, image_index: int) -> int:
    if seed < 0 or image_index < 0:
        raise SpecError("occlusion seed / image index", given=(seed, image_index),
                        expected="non-negative integers")
    state = np.random.SeedSequence([seed, image_index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def window_noise(grid: OcclusionGrid, *, seed: int = 0, image_index: int = 0,
                 fill: NoiseFill | None = None) -> Tensor:
    """All windows' fill for one image, drawn at once from a CPU ``torch.Generator`` seeded by
    (seed, image_index), so it does not depend on batching or device.

    Returns:
        (n_windows, 3, o, o) float32 on CPU (n_windows * 3 * o**2 * 4 bytes: 7.5 MB at 224/11/3).
    """
    generator = torch.Generator().manual_seed(_image_seed(seed, image_index))
    return (fill or NoiseFill()).sample(grid.n_windows, grid.size, generator)


def occluded_batches(image: Tensor, grid: OcclusionGrid | None = None, *, batch_size: int = 64,
                     seed: int = 0, image_index: int = 0,
                     fill: NoiseFill | None = None) -> Iterator[tuple[np.ndarray, Tensor]]:
    """Streams the occluded copies of one image, built on the image's device.

    Args:
        image: (3, H, W) float in the space the fill is defined in.
        grid: the windows; default ``OcclusionGrid(H, W)`` (11 / 3).
        batch_size: copies per chunk (the last one may be shorter).
        seed, image_index: the experiment's seed and the image's global index.
        fill: the occluder; default :class:`NoiseFill`.

    Yields:
        ``(positions (n, 2) int64 (row, col) origins, batch (n, 3, H, W))``, image dtype.
    """
    grid = _check_image(image, grid)
    if batch_size < 1:
        raise SpecError("occlusion batch_size", given=batch_size, expected=">= 1")
    noise = window_noise(grid, seed=seed, image_index=image_index, fill=fill)
    origins = grid.origins()
    for start in range(0, len(origins), batch_size):
        stop = start + batch_size
        yield origins[start:stop], _occlude(image, origins[start:stop], noise[start:stop])


def _check_image(image: Tensor, grid: OcclusionGrid | None) -> OcclusionGrid:
    if image.ndim != 3 or image.shape[0] != 3:
        raise SpecError("image to occlude", given=tuple(image.shape), expected="(3, H, W)")
    grid = grid or OcclusionGrid(int(image.shape[1]), int(image.shape[2]))
    if (grid.height, grid.width) != tuple(image.shape[1:]):
        raise SpecError("occlusion grid size", given=(grid.height, grid.width),
                        expected=f"the image's {tuple(image.shape[1:])}")
    return grid


def _occlude(image: Tensor, origins: np.ndarray, noise: Tensor) -> Tensor:
    """(3, H, W), (n, 2), (n, 3, o, o) -> (n, 3, H, W) with window k filled by noise[k]."""
    n, size, dev = len(origins), noise.shape[-1], image.device
    batch = image.detach().unsqueeze(0).repeat(n, 1, 1, 1)
    offsets = torch.arange(size, device=dev)
    rows = torch.as_tensor(origins[:, 0], device=dev)[:, None] + offsets
    cols = torch.as_tensor(origins[:, 1], device=dev)[:, None] + offsets
    k = torch.arange(n, device=dev)[:, None, None]
    batch[k, :, rows[:, :, None], cols[:, None, :]] = noise.to(dev, image.dtype).permute(0, 2, 3, 1)
    return batch


@dataclass(frozen=True)
class FieldMap:
    """Feature position (i, j) -> input-space centre ``offset + stride * (i, j)``."""

    stride: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def proportional(cls, input_hw: tuple[int, int], feature_hw: tuple[int, int]) -> FieldMap:
        """Centres of an even tiling: ``(i + 0.5) H / h - 0.5`` (exact for 'same' convs)."""
        sy, sx = input_hw[0] / feature_hw[0], input_hw[1] / feature_hw[1]
        return cls((sy, sx), ((sy - 1) / 2, (sx - 1) / 2))

    def to_input(self, positions: np.ndarray) -> np.ndarray:
        """(n, 2) feature (row, col) -> (n, 2) float64 input (row, col)."""
        return np.asarray(self.offset) + np.asarray(self.stride) * np.asarray(positions, float)


@dataclass(frozen=True)
class Discrepancy:
    """One image's discrepancy for every unit of a layer (or the U kept ones, in their order).

    Attributes:
        values: (U, n_y, n_x) float32, d per unit and window (grid of :class:`OcclusionGrid`).
        maps: (U, H, W) float32, values painted over the input (0 where no window covers).
        peaks: (U, 2) int64 feature (row, col) of each unit's maximum on the clean image (the
            first in row-major order on ties).
        centres: (U, 2) float64, the peaks mapped to input space by the field map.
        activation: (U,) float32, the clean maximum ``A_u(x)[p*]``.
    """

    values: np.ndarray
    maps: np.ndarray
    peaks: np.ndarray
    centres: np.ndarray
    activation: np.ndarray


def discrepancy_maps(truncated: Truncated, image: Tensor, *, grid: OcclusionGrid | None = None,
                     batch_size: int = 64, seed: int = 0, image_index: int = 0,
                     fill: NoiseFill | None = None, field: FieldMap | None = None,
                     compat: bool = False,
                     units: Sequence[int] | np.ndarray | None = None) -> Discrepancy:
    """Occludes one image everywhere and measures every unit of the layer at once.

    Cost: ``n_windows = (1 + (H - o) // s) * (1 + (W - o) // s)`` forwards of ``truncated``
    (5,184 at 224 / 11 / 3) in ``ceil(n_windows / batch_size)`` batches, plus one clean forward;
    peak memory about ``batch_size * (3 H W + U h w)`` floats on the device, plus the outputs
    ``U * (n_windows + H W)`` float32 on CPU.

    Args:
        truncated: ``(n, 3, H, W) -> (n, U, h, w)``, the model cut at the layer (with any input
            normalisation inside it), in eval mode, on the image's device.
        image: (3, H, W) in network-input space, the fill's units.
        grid, batch_size, seed, image_index, fill: as :func:`occluded_batches`.
        field: feature -> input mapping of the peaks; default :meth:`FieldMap.proportional`.
        compat: the seed's ``max_ij (A(x) - A(x~))`` and overwrite painting.
        units: the units to return, in this order (default all); the change is measured for
            every unit, but only these are painted (a stage keeps the units that have the
            image among their top images).
    """
    grid = _check_image(image, grid)
    log.debug("occluding image %d: %d windows of %d px, batches of %d", image_index,
              grid.n_windows, grid.size, batch_size)
    with torch.inference_mode():
        clean = _forward(truncated, image.unsqueeze(0))[0]
        n_units, h, w = clean.shape
        flat = clean.flatten(1).argmax(1)
        chunks = [_window_change(clean, _forward(truncated, batch), flat, compat).cpu()
                  for _, batch in occluded_batches(image, grid, batch_size=batch_size, seed=seed,
                                                   image_index=image_index, fill=fill)]
        activation = clean.flatten(1).gather(1, flat[:, None])[:, 0].float().cpu().numpy()
    keep = np.arange(n_units) if units is None else np.asarray(units, dtype=np.int64)
    values = torch.cat(chunks).T.reshape(n_units, *grid.shape).numpy()[keep]
    flat_np = flat.cpu().numpy()[keep]
    peaks = np.stack([flat_np // w, flat_np % w], axis=1).astype(np.int64)
    centres = (field or FieldMap.proportional((grid.height, grid.width), (h, w))).to_input(peaks)
    return Discrepancy(values=values, maps=paint(values, grid, overwrite=compat), peaks=peaks,
                       centres=centres, activation=activation[keep])


def _forward(truncated: Truncated, batch: Tensor) -> Tensor:
    out = truncated(batch)
    if not isinstance(out, Tensor) or out.ndim != 4 or out.shape[0] != batch.shape[0]:
        raise ModelError("truncated model output", given=getattr(out, "shape", type(out)),
                         expected=f"({batch.shape[0]}, U, h, w) tensor",
                         hint="cut the model at a convolutional layer")
    return out


def _window_change(clean: Tensor, occluded: Tensor, flat: Tensor, compat: bool) -> Tensor:
    """(U, h, w), (n, U, h, w), (U,) argmax -> (n, U) float32 discrepancy."""
    if compat:
        return (clean.unsqueeze(0) - occluded).flatten(2).amax(dim=2).float()
    units = torch.arange(clean.shape[0], device=clean.device)
    return (clean.flatten(1)[units, flat] - occluded.flatten(2)[:, units, flat]).float()


def paint(values: np.ndarray, grid: OcclusionGrid, *, overwrite: bool = False) -> np.ndarray:
    """Paints (U, n_y, n_x) per-window values over the input -> (U, H, W) float32: the mean
    of the windows covering each pixel, or with ``overwrite`` the seed's rule (the last window
    in row-major order wins); 0 where no window covers the pixel."""
    cover_y = _cover(grid.rows, grid.size, grid.height)
    cover_x = _cover(grid.cols, grid.size, grid.width)
    v = np.asarray(values, dtype=np.float64)
    if overwrite:
        last_y, last_x = _last(cover_y), _last(cover_x)
        out = v[:, last_y][:, :, last_x] * ((last_y >= 0)[:, None] & (last_x >= 0)[None])
        return out.astype(np.float32)
    units, n_y, n_x = v.shape
    width = grid.width  # two gemms (a stacked matmul is ~10x slower)
    cols = (v.reshape(units * n_y, n_x) @ cover_x.T).reshape(units, n_y, width)
    sums = (cover_y @ cols.transpose(1, 0, 2).reshape(n_y, units * width)).reshape(
        grid.height, units, width).transpose(1, 0, 2)
    counts = np.outer(cover_y.sum(1), cover_x.sum(1))
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).astype(np.float32)


def _cover(origins: np.ndarray, size: int, length: int) -> np.ndarray:
    """(length, n) float64: pixel r lies in window a."""
    r = np.arange(length)[:, None]
    return ((r >= origins[None]) & (r < origins[None] + size)).astype(np.float64)


def _last(cover: np.ndarray) -> np.ndarray:
    """(length,) index of the last covering window, -1 if none."""
    n = cover.shape[1]
    return np.where(cover.any(1), n - 1 - np.argmax(cover[:, ::-1], axis=1), -1)
