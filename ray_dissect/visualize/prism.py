"""PRISM: Principal Image Sections Mapping (design visual.md section 3), exact and distributed.

TorchPRISM 2.0.0 colours every spatial position of a layer's maps by its first three principal
components, computed jointly over the image set, then sharpens the map back to input resolution
by gradual extrapolation (GE). Here the same computation is split into pure steps so a stage can
run it over shards:

1. :class:`PCAAccumulator`: per-shard ``count``, ``sum (C,) float64`` and Gram ``(C, C)
   float64`` over every spatial position of every image (one sample of dimension C each);
   :meth:`~PCAAccumulator.merge` reduces shards, :meth:`~PCAAccumulator.state_dict` /
   :meth:`~PCAAccumulator.from_state` save and resume partials as plain numpy arrays.
2. :meth:`PCAAccumulator.finalize`: one ``numpy.linalg.eigh`` of the covariance gives
   :class:`PrismPCA` (the mean, three sign-fixed axes, the explained-variance ratios).
3. :func:`project`: the scores ``(B, 3, h, w) float32`` (TorchPRISM's ``U[:, :3] diag(s[:3])``).
4. :func:`prism_maps` on the gathered scores of the whole set (the normalisation and the colour
   sets are joint over the set by design, and the scores are small): :func:`normalize_to_rgb`,
   :func:`quantize`, :func:`gradual_extrapolation`, :func:`split_rgb`.
5. :func:`cluster_presence`: seeded k-means of the images' colour-presence vectors.

Fixes over the seed: explicit PCA and GE layers (no hooks, no class-level state), the sign of
each component fixed (its largest-magnitude loading positive) so colours do not flip between
runs, vectorised colour sets (``code = 9 r + 3 g + b``), sorted colour columns and clustering
on quantised codes only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ray_dissect.errors import SpecError

log = logging.getLogger(__name__)

QuantizeMode = Literal["none", "plain", "inclusive", "exclusive"]
QUANTIZE_MODES: tuple[str, ...] = ("none", "plain", "inclusive", "exclusive")
N_COMPONENTS = 3
N_COLOURS = 27
DROPPED = 255
"""The colour code of a pixel that ``inclusive`` / ``exclusive`` quantisation zeroed."""
SPLIT_COLORMAPS: tuple[str, str, str] = ("Reds", "Greens", "Blues")


@dataclass(frozen=True)
class PrismPCA:
    """The joint PCA of one layer over an image set.

    Attributes:
        mean: (C,) float64, the mean feature vector over all positions of all images.
        axes: (C, 3) float64, the first three principal axes (columns), each sign-fixed so that
            its largest-magnitude loading is positive (the first one on ties).
        explained_variance_ratio: (min(n, C),) float64, eigenvalue / sum of eigenvalues,
            descending (TorchPRISM's ``s**2 / sum(s**2)``); negative round-off is clipped to 0.
        n_samples: n, the number of (image, position) samples.
    """

    mean: np.ndarray
    axes: np.ndarray
    explained_variance_ratio: np.ndarray
    n_samples: int


class PCAAccumulator:
    """Mergeable sufficient statistics of a layer's features for an exact joint PCA."""

    def __init__(self, channels: int) -> None:
        """Starts an empty accumulator.

        Args:
            channels: C, the number of channels of the PCA layer.
        """
        if channels < N_COMPONENTS:
            raise SpecError("PRISM PCA layer channels", given=channels,
                            expected=f">= {N_COMPONENTS}", hint="choose a wider layer")
        self.channels = channels
        self.count = 0
        self.total = np.zeros(channels, dtype=np.float64)
        self.gram = np.zeros((channels, channels), dtype=np.float64)

    def add(self, features: Tensor | np.ndarray) -> None:
        """Adds every spatial position of every image as one sample.

        Args:
            features: (B, C, h, w) maps of the PCA layer, any float dtype, any device (the sums
                are taken in float64 on that device).
        """
        x = _as_samples(torch.as_tensor(features), self.channels)
        self.count += int(x.shape[0])
        self.total += x.sum(0).cpu().numpy()
        self.gram += (x.T @ x).cpu().numpy()

    def merge(self, other: PCAAccumulator) -> PCAAccumulator:
        """Adds another shard's statistics into this one (in place) and returns self."""
        if other.channels != self.channels:
            raise SpecError("PCA shards to merge", given=other.channels,
                            expected=f"{self.channels} channels", hint="merge one layer only")
        self.count += other.count
        self.total += other.total
        self.gram += other.gram
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """The statistics as plain numpy arrays (``np.savez``-able): count, total, gram."""
        return {"count": np.asarray(self.count, dtype=np.int64), "total": self.total.copy(),
                "gram": self.gram.copy()}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> PCAAccumulator:
        """Rebuilds an accumulator saved by :meth:`state_dict`."""
        acc = cls(int(np.asarray(state["total"]).shape[0]))
        acc.count = int(state["count"])
        acc.total = np.array(state["total"], dtype=np.float64)
        acc.gram = np.array(state["gram"], dtype=np.float64)
        return acc

    def finalize(self) -> PrismPCA:
        """One ``numpy.linalg.eigh`` of the sample covariance (divisor n - 1)."""
        n = self.count
        if n < 2:
            raise SpecError("PRISM PCA samples", given=n, expected=">= 2 (image, position) pairs",
                            hint="add features before finalize()")
        mean = self.total / n
        cov = (self.gram - n * np.outer(mean, mean)) / (n - 1)
        eigvals, eigvecs = np.linalg.eigh((cov + cov.T) / 2)
        order = np.argsort(eigvals)[::-1]
        lam = np.clip(eigvals[order][: min(n, self.channels)], 0.0, None)
        ratio = lam / lam.sum() if lam.sum() > 0 else np.zeros_like(lam)
        axes = _fix_signs(eigvecs[:, order[:N_COMPONENTS]])
        log.debug("PRISM PCA over %d samples: PC0-2 explain %s", n, ratio[:N_COMPONENTS])
        return PrismPCA(mean=mean, axes=axes, explained_variance_ratio=ratio, n_samples=n)


def _as_samples(features: Tensor, channels: int) -> Tensor:
    """(B, C, h, w) -> (B h w, C) float64, rows in (image, row, col) order."""
    if features.ndim != 4 or features.shape[1] != channels:
        raise SpecError("PRISM features shape", given=tuple(features.shape),
                        expected=f"(B, {channels}, h, w)", hint="pass the PCA layer's maps")
    return features.detach().permute(0, 2, 3, 1).reshape(-1, channels).to(torch.float64)


def _fix_signs(axes: np.ndarray) -> np.ndarray:
    """Flips each column so that its largest-|loading| entry is positive."""
    rows = np.argmax(np.abs(axes), axis=0)
    signs = np.where(axes[rows, np.arange(axes.shape[1])] < 0, -1.0, 1.0)
    return axes * signs


def project(features: Tensor, pca: PrismPCA) -> Tensor:
    """The first three principal-component scores at the PCA layer.

    Args:
        features: (B, C, h, w) maps of the PCA layer.
        pca: the joint PCA of the set.

    Returns:
        (B, 3, h, w) float32 on the features' device: ``(x - mean) @ axes`` per position.
    """
    x = _as_samples(features, pca.mean.shape[0])
    b, _, h, w = features.shape
    mean = torch.as_tensor(pca.mean, device=x.device)
    axes = torch.as_tensor(pca.axes, device=x.device)
    scores = (x - mean) @ axes
    return scores.reshape(b, h, w, N_COMPONENTS).permute(0, 3, 1, 2).to(torch.float32)


def normalize_to_rgb(maps: Tensor) -> Tensor:
    """TorchPRISM's ``_normalize_to_rgb`` over the whole tensor (all images and channels).

    Standardise with the mean and the unbiased standard deviation of all elements, clip to
    [-1, 1], then min-max over all elements to [0, 1]. A constant tensor (std or range 0) maps
    to zeros instead of NaN.

    Args:
        maps: (B, k, h, w) any float.

    Returns:
        (B, k, h, w) float32 in [0, 1].
    """
    x = maps.detach().to(torch.float64)
    std = x.std() if x.numel() > 1 else x.new_zeros(())
    if not bool(std > 0):
        return torch.zeros_like(x, dtype=torch.float32)
    x = ((x - x.mean()) / std).clip(-1.0, 1.0)
    span = x.max() - x.min()
    if not bool(span > 0):
        return torch.zeros_like(x, dtype=torch.float32)
    return ((x - x.min()) / span).to(torch.float32)


def gradual_extrapolation(maps: Tensor, ge_layers: Sequence[Tensor]) -> Tensor:
    """TorchPRISM's GE: upsample through the earlier layers, multiplying by their channel means.

    For each ``e`` in ``ge_layers`` in the given order: ``maps <- bilinear(maps, size(e),
    align_corners=False) * mean_c(e)``. No normalisation here (see :func:`prism_maps`).

    Args:
        maps: (B, k, h, w) float, e.g. the scores or the quantised colours.
        ge_layers: feature maps (B, C_i, h_i, w_i), ordered from the PCA layer back toward the
            input (TorchPRISM's hooked excitations reversed, the PCA layer's own excitation
            excluded); C_i may be 1 when the channel means were cached in an earlier pass.

    Returns:
        (B, k, h_last, w_last) float32 on the maps' device; ``maps`` itself if no layers.
    """
    out = maps.detach().to(torch.float32)
    for i, e in enumerate(ge_layers):
        if e.ndim != 4 or e.shape[0] != out.shape[0]:
            raise SpecError(f"PRISM GE layer {i} shape", given=tuple(e.shape),
                            expected=f"({out.shape[0]}, C, h, w)", hint="one map per image")
        out = F.interpolate(out, size=tuple(e.shape[-2:]), mode="bilinear", align_corners=False)
        out = out * e.detach().to(out.device, torch.float32).mean(dim=1, keepdim=True)
    return out


@dataclass(frozen=True)
class Quantized:
    """Colours of PRISM maps quantised to 3 levels per channel (27 colours).

    Attributes:
        rgb: (B, 3, h, w) float32 in {0, 0.5, 1}; dropped pixels are 0 (black), as TorchPRISM.
        codes: (B, h, w) uint8, ``9 r + 3 g + b`` with levels r, g, b in {0, 1, 2}, or
            :data:`DROPPED` (255) where the mode zeroed the pixel.
        presence: (B, 27) bool, colour j occurs among the image's kept pixels (columns sorted
            by code; dropped pixels count as no colour, whereas the seed counted them black).
        common: (27,) bool, the colours present in every image (before dropping).
    """

    rgb: Tensor
    codes: Tensor
    presence: Tensor
    common: Tensor


def quantize(rgb: Tensor, mode: QuantizeMode = "none") -> Quantized:
    """TorchPRISM's quantisation ``0.5 * round(rgb / 0.5)`` and its colour selections.

    ``torch.round`` rounds half to even (0.25 -> 0, 0.75 -> 1). With S_b the colour set of image
    b over the whole batch: ``inclusive`` keeps the pixels whose colour is in every S_b (the
    intersection), ``exclusive`` the others (colours absent from at least one image, which is not
    "unique to one image"), ``none`` and ``plain`` keep every pixel (``plain`` is TorchPRISM
    with both flags: the map is then the quantised colours; ``none`` maps stay unquantised).

    Args:
        rgb: (B, 3, h, w) float in [0, 1], normally :func:`normalize_to_rgb` of the scores.
        mode: "none", "plain", "inclusive" or "exclusive".

    Returns:
        The quantised colours, codes and presence, on the input's device.
    """
    if mode not in QUANTIZE_MODES:
        raise SpecError("PRISM quantize", given=mode, expected=" | ".join(QUANTIZE_MODES),
                        hint="use 'none' to keep every pixel")
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise SpecError("PRISM rgb shape", given=tuple(rgb.shape), expected="(B, 3, h, w)")
    levels = torch.round(rgb.detach().to(torch.float32) / 0.5).clamp(0, 2).to(torch.int64)
    codes = 9 * levels[:, 0] + 3 * levels[:, 1] + levels[:, 2]
    present = _presence(codes)
    common = present.all(dim=0)
    in_common = common[codes]
    everything = torch.ones_like(in_common)
    keep = {"none": everything, "plain": everything, "inclusive": in_common,
            "exclusive": ~in_common}[mode]
    kept_codes = torch.where(keep, codes, torch.full_like(codes, DROPPED))
    quant = levels.to(torch.float32) * 0.5 * keep.unsqueeze(1)
    return Quantized(rgb=quant, codes=kept_codes.to(torch.uint8), presence=_presence(kept_codes),
                     common=common)


def _presence(codes: Tensor) -> Tensor:
    """(B, h, w) int64 codes (DROPPED ignored) -> (B, 27) bool."""
    one_hot = F.one_hot(codes.flatten(1).clamp(max=N_COLOURS), N_COLOURS + 1)
    return one_hot.amax(dim=1)[:, :N_COLOURS].bool()


def split_rgb(rgb: Tensor, colormaps: Sequence[str] = SPLIT_COLORMAPS) -> Tensor:
    """TorchPRISM's ``--split-rgb`` panels: channel c drawn alone in matplotlib's colormap c.

    Args:
        rgb: (B, 3, H, W) float in [0, 1].
        colormaps: one matplotlib colormap name per channel (default Reds, Greens, Blues).

    Returns:
        (B, 3, 3, H, W) float32 on the input's device: [b, c] is an RGB image of channel c.
    """
    from matplotlib import colormaps as registry  # lazy: only figures need matplotlib

    if rgb.ndim != 4 or rgb.shape[1] != len(colormaps):
        raise SpecError("PRISM split_rgb input", given=tuple(rgb.shape),
                        expected=f"(B, {len(colormaps)}, H, W)")
    x = rgb.detach().to(torch.float64).clip(0, 1).cpu().numpy()
    panels = [registry[name](x[:, c])[..., :3] for c, name in enumerate(colormaps)]
    stacked = np.stack(panels, axis=1).transpose(0, 1, 4, 2, 3)
    return torch.as_tensor(stacked, dtype=torch.float32, device=rgb.device)


@dataclass(frozen=True)
class PrismMaps:
    """PRISM's outputs for one image set.

    Attributes:
        components: (B, 3, h, w) float32, the principal-component scores.
        rgb: (B, 3, H, W) float32 in [0, 1]; (B, 3, h, w) without GE layers.
        codes: (B, h, w) uint8 colour codes at the PCA layer (see :class:`Quantized`).
        presence: (B, 27) bool colour presence per image (see :class:`Quantized`).
        split: (B, 3, 3, H, W) float32 per-channel panels, or None without ``split``.
    """

    components: Tensor
    rgb: Tensor
    codes: Tensor
    presence: Tensor
    split: Tensor | None


def prism_maps(features: Tensor, pca: PrismPCA, ge_layers: Sequence[Tensor] = (),
               quantize_mode: QuantizeMode = "none", split: bool = False) -> PrismMaps:
    """TorchPRISM's ``get_maps`` on one whole image set (normalisation and colours are joint).

    Order as TorchPRISM: scores P; with ``plain``/``inclusive``/``exclusive`` the map is the
    selected quantised colours of ``normalize_to_rgb(P)``, otherwise P itself; then GE over
    ``ge_layers``; then ``normalize_to_rgb``. Quantisation thus precedes GE, so the final rgb is
    not quantised (the codes are). Codes and presence are computed in every mode.

    Args:
        features: (B, C, h, w) PCA-layer maps of the whole set. A stage holding shards can
            instead concatenate the shards' :func:`project` scores and run the same steps.
        pca: the joint PCA of the set.
        ge_layers: (B, C_i, h_i, w_i) maps from the PCA layer back toward the input; empty for
            no GE (then rgb stays at h x w).
        quantize_mode: "none", "plain", "inclusive" or "exclusive".
        split: also render the per-channel panels of :func:`split_rgb`.
    """
    scores = project(features, pca)
    quant = quantize(normalize_to_rgb(scores), quantize_mode)
    base = scores if quantize_mode == "none" else quant.rgb
    rgb = normalize_to_rgb(gradual_extrapolation(base, ge_layers))
    return PrismMaps(components=scores, rgb=rgb, codes=quant.codes, presence=quant.presence,
                     split=split_rgb(rgb) if split else None)


@dataclass(frozen=True)
class Clustering:
    """K-means of images by their colour-presence vectors.

    Attributes:
        labels: (B,) int64 cluster of each image, numbered by first appearance (image 0 is in
            cluster 0), so equal partitions give equal labels.
        centres: (k, 27) float64 cluster means, in label order.
        inertia: the sum of squared distances to the assigned centres.
    """

    labels: np.ndarray
    centres: np.ndarray
    inertia: float


def cluster_presence(presence: Tensor | np.ndarray, n_clusters: int, *, seed: int = 0,
                     n_init: int = 10, max_iter: int = 100) -> Clustering:
    """Seeded k-means (k-means++ starts, Lloyd iterations, best of ``n_init``).

    Args:
        presence: (B, n_colours) bool or float, e.g. :attr:`PrismMaps.presence`.
        n_clusters: k, 1 <= k <= B.
        seed: seeds ``numpy.random.default_rng``; same inputs and seed give the same result.
        n_init: restarts; the lowest inertia wins (the earliest on ties).
        max_iter: Lloyd iterations per restart at most.
    """
    x = np.asarray(torch.as_tensor(presence).cpu(), dtype=np.float64)
    if x.ndim != 2 or not 1 <= n_clusters <= x.shape[0]:
        raise SpecError("PRISM clustering", given=(tuple(x.shape), n_clusters),
                        expected="(B, n_colours) presence and 1 <= n_clusters <= B")
    rng = np.random.default_rng(seed)
    runs = [_lloyd(x, _kmeans_pp(x, n_clusters, rng), max_iter) for _ in range(max(1, n_init))]
    return _canonical(*min(runs, key=lambda run: run[2]))


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starting centres (k, d): each next one drawn with probability ~ D^2."""
    centres = [x[rng.integers(x.shape[0])]]
    for _ in range(1, k):
        d2 = ((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
    return np.asarray(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray,
           max_iter: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd iterations until the assignment stops changing; empty clusters keep their centre."""
    labels = np.full(len(x), -1)
    for _ in range(max_iter):
        d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(centres)):
            if np.any(labels == j):
                centres[j] = x[labels == j].mean(0)
    d2 = ((x - centres[labels]) ** 2).sum()
    return labels, centres, float(d2)


def _canonical(labels: np.ndarray, centres: np.ndarray, inertia: float) -> Clustering:
    """Renumbers clusters by first appearance; unused centres go last."""
    order = list(dict.fromkeys(labels.tolist()))
    order += [j for j in range(len(centres)) if j not in order]
    remap = np.empty(len(centres), dtype=np.int64)
    remap[order] = np.arange(len(centres))
    return Clustering(labels=remap[labels].astype(np.int64), centres=centres[order],
                      inertia=inertia)
