"""Concept blackout (inner-detectors' ``make verify``), without its shortcuts.

For each image x and each concept c annotated in its pixel layers, the copy x_c with c's
pixels black: the concept's mask (at mask resolution) upsampled nearest to the network's input
size, and those pixels set to 0 *before* normalisation (the image is first resized to the
input size as the extraction does, so the original and its copies differ only there).
Whole-image labels (scene, texture) cover every pixel and are not blacked out.

With a_u(x) the mean of unit u's map on x, the change of u under c's blackout is

    Delta(u, c) = sum_x a_u(x_c) / sum_x a_u(x) - 1

over the images annotated with c, a term left out (per unit) when either mean is not finite.
Sums are kept per image shard and add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


def upsample_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """(sh, sw) bool mask -> (size, size) bool, pixel (i, j) taking mask[i sh // size,
    j sw // size] (PyTorch's ``nearest``)."""
    rows = (np.arange(size) * mask.shape[0]) // size
    cols = (np.arange(size) * mask.shape[1]) // size
    return mask[rows[:, None], cols[None, :]]


def resized(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8, PIL bilinear as the preprocessing does."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def pixel_concepts(pixel: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each concept of an image's (K, sh, sw) int32 pixel layers with its (sh, sw) bool mask
    (any layer), ascending label number; 0 (none) is left out."""
    return [(int(c), (pixel == c).any(axis=0)) for c in np.unique(pixel) if c != 0]


def copies(image: np.ndarray, pixel: np.ndarray, size: int
           ) -> Iterator[tuple[int, np.ndarray]]:
    """(0, the resized image), then (c, its copy with concept c blacked out) per concept.

    Args:
        image: (h, w, 3) uint8 RGB; pixel: (K, sh, sw) int32 pixel label layers.
        size: the network's input side.
    """
    base = resized(image, size)
    yield 0, base
    for concept, mask in pixel_concepts(pixel):
        out = base.copy()
        out[upsample_nearest(mask, size)] = 0
        yield concept, out


@dataclass
class BlackoutSums:
    """Per concept c, over the images annotated with c: sum of a_u(x) (``before``), of
    a_u(x_c) (``after``) and the number of terms (``images``), each (U,), and the number of
    images (``seen``)."""

    units: int
    before: dict[int, np.ndarray] = field(default_factory=dict)
    after: dict[int, np.ndarray] = field(default_factory=dict)
    images: dict[int, np.ndarray] = field(default_factory=dict)
    seen: dict[int, int] = field(default_factory=dict)

    def _ensure(self, concept: int) -> None:
        if concept not in self.before:
            self.before[concept] = np.zeros(self.units)
            self.after[concept] = np.zeros(self.units)
            self.images[concept] = np.zeros(self.units, dtype=np.int64)
            self.seen[concept] = 0

    def add(self, concept: int, before: np.ndarray, after: np.ndarray) -> None:
        """Add one image's (U,) float64 means, skipping units where either is not finite."""
        self._ensure(concept)
        ok = np.isfinite(before) & np.isfinite(after)
        self.before[concept] += np.where(ok, before, 0.0)
        self.after[concept] += np.where(ok, after, 0.0)
        self.images[concept] += ok
        self.seen[concept] += 1

    def arrays(self) -> dict[str, np.ndarray]:
        """``concepts`` (C,) int64 ascending, ``seen`` (C,) int64, ``before``/``after`` (U, C)
        float64, ``images`` (U, C) int64."""
        concepts = sorted(self.before)
        out = {"concepts": np.asarray(concepts, dtype=np.int64),
               "seen": np.asarray([self.seen[c] for c in concepts], dtype=np.int64)}
        for name, d in (("before", self.before), ("after", self.after),
                        ("images", self.images)):
            out[name] = (np.stack([d[c] for c in concepts], axis=1) if concepts
                         else np.zeros((self.units, 0), dtype=np.int64 if name == "images"
                                       else np.float64))
        return out

    def merge(self, arrays: dict[str, np.ndarray]) -> None:
        """Add another shard's :meth:`arrays`."""
        for j, c in enumerate(arrays["concepts"].tolist()):
            self._ensure(c)
            self.before[c] += arrays["before"][:, j]
            self.after[c] += arrays["after"][:, j]
            self.images[c] += arrays["images"][:, j].astype(np.int64)
            self.seen[c] += int(arrays["seen"][j])


def delta(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Delta = after / before - 1 elementwise (float64), NaN where not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = after / before - 1.0
    return np.where(np.isfinite(out), out, np.nan)


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """Pearson r and its two-sided p (``scipy.stats.pearsonr``) over the pairs where both
    are finite; (None, None) for fewer than 2 pairs or a constant side."""
    from scipy.stats import pearsonr

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None, None
    result = pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)
