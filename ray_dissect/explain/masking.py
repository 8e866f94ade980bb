"""The cosine concept-masking score of an explanation (CCE), on a model replica.

For an explanation L of the activation range (lo, hi) of a unit, over the images x where L is
present: keep the pixels of L and dim every other pixel by a random factor U(0, 1) (drawn at
mask resolution, then resized bilinearly to the image), run the model again, and compare the
unit's maps before (a) and after (a') on the positions where the original activation lies in
the range (bits): ``cos(a * bits, a' * bits)``; the score is the mean over the images. Images
whose map has no value in the range, or whose masked map is all zero there, are left out (the
cosine is undefined). A score near 1 says the unit's response in that range depends on the
explanation's pixels alone. The random factors are seeded per (unit, range, image).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from ray_dissect.models.extract import Extractor


def masked_images(images: list[np.ndarray], keep: np.ndarray, seeds: list[tuple[int, ...]]
                  ) -> list[np.ndarray]:
    """Dim each image outside ``keep``.

    Args:
        images: each (h, w, 3) uint8.
        keep: (n, sh, sw) bool, the explanation's pixels at mask resolution.
        seeds: one seed tuple per image for the U(0, 1) factors.

    Returns:
        each (h, w, 3) uint8: image x factor, the factor 1 on ``keep`` and random elsewhere,
        resized bilinearly from (sh, sw) to (h, w).
    """
    out = []
    for img, k, seed in zip(images, keep, seeds, strict=True):
        factor = np.where(k, 1.0, np.random.default_rng(seed).random(k.shape)).astype(np.float32)
        big = np.asarray(Image.fromarray(factor, mode="F").resize(
            (img.shape[1], img.shape[0]), Image.Resampling.BILINEAR))
        out.append(np.clip(np.rint(img * big[..., None]), 0, 255).astype(np.uint8))
    return out


def cosine_in_range(before: np.ndarray, after: np.ndarray, lo: float, hi: float,
                    inclusive: bool) -> np.ndarray:
    """(n,) cosine of (before * bits, after * bits) per image; NaN where undefined.

    Args:
        before, after: (n, h, w) float32 unit maps; bits = lo < before < hi (or <=).
    """
    bits = ((before >= lo) & (before <= hi)) if inclusive else ((before > lo) & (before < hi))
    a = (before * bits).reshape(len(before), -1).astype(np.float64)
    b = (after * bits).reshape(len(after), -1).astype(np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (a * b).sum(axis=1) / norm, np.nan)


def concept_masking_score(extractor: Extractor, layer: str, unit: int,
                          images: np.ndarray, read: Callable[[int], np.ndarray],
                          keep: Callable[[np.ndarray], np.ndarray],
                          before: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                          inclusive: bool, seed: tuple[int, ...], batch: int) -> float | None:
    """Mean cosine over ``images`` (global indices where the explanation is present).

    ``read(i)`` decodes image i; ``keep(idx)`` gives (n, sh, sw) bool explanation masks and
    ``before(idx)`` the (n, h, w) original maps of the unit for a batch of indices.
    """
    scores = []
    for start in range(0, len(images), batch):
        idx = images[start:start + batch]
        masked = masked_images([read(int(i)) for i in idx], keep(idx),
                               [(*seed, int(i)) for i in idx])
        after = extractor(masked)[layer][:, unit]
        scores.append(cosine_in_range(before(idx), after, lo, hi, inclusive))
    values = np.concatenate(scores) if scores else np.zeros(0)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None
