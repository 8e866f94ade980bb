"""Faithful copy of the scoring path before the fast-scoring rewrite (the benchmark baseline).

Copied from ray_dissect/concepts/masks.py at commit cc96342 (unit_masks and its helpers);
benchmarks/bench_scoring.py times it side by side with the current implementation and checks
the two return identical signatures.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ray_dissect.concepts.masks import UnitMask

PAIRS_PER_CHUNK = 256


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling, ``align_corners=False``.

    Args:
        maps: (p, h, w) float32.
    Returns:
        (p, sh, sw) float32 (the input itself when the sizes already match).
    """
    if maps.shape[1:] == shape:
        return maps
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(maps))[:, None], size=shape,
                            mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def _signatures(pairs_img: np.ndarray, pairs_unit: np.ndarray, inside: np.ndarray,
                set_ids: np.ndarray, first_image: int, k: int) -> list[UnitMask]:
    """Count mask pixels per (pair, label set); ``inside`` is (p, sh, sw) bool."""
    pair, pix = np.nonzero(inside.reshape(len(inside), -1))
    sets = set_ids.reshape(set_ids.shape[0], -1)[pairs_img[pair], pix]
    stride = int(sets.max(initial=0)) + 1
    keys, counts = np.unique(pair.astype(np.int64) * stride + sets, return_counts=True)
    pair_of, set_of = keys // stride, keys % stride
    unit_of = pairs_unit[pair_of]
    out = []
    for unit in range(k):
        sel = unit_of == unit
        out.append(UnitMask(pairs_img[pair_of[sel]].astype(np.int64) + first_image,
                            set_of[sel].astype(np.int64), counts[sel].astype(np.int64)))
    return out


def _inside(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int],
            valid: np.ndarray, inclusive: bool
            ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The upsampled, thresholded masks of the (image, unit) pairs whose peak is in range.

    ``lo`` and ``hi`` are (k,) per unit or (n, k) per image and unit. Yields chunks of
    (image (p,) int64 block index, unit (p,) int64, inside (p, sh, sw) bool); pairs whose peak
    cannot reach the range, and invalid images, are never upsampled.
    """
    n, k = acts.shape[:2]
    lo, hi = np.broadcast_to(lo, (n, k)), np.broadcast_to(hi, (n, k))
    peak = acts.reshape(n, k, -1).max(axis=2)
    fires = ((peak >= lo) if inclusive else (peak > lo)) & valid[:, None]
    pairs_img, pairs_unit = np.nonzero(fires)
    for start in range(0, len(pairs_img), PAIRS_PER_CHUNK):
        img = pairs_img[start:start + PAIRS_PER_CHUNK]
        unit = pairs_unit[start:start + PAIRS_PER_CHUNK]
        up = upsample(acts[img, unit], shape)
        lo_u, hi_u = lo[img, unit][:, None, None], hi[img, unit][:, None, None]
        inside = ((up >= lo_u) & (up <= hi_u)) if inclusive else ((up > lo_u) & (up < hi_u))
        yield img, unit, inside


def unit_masks(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, set_ids: np.ndarray,
               first_image: int, valid: np.ndarray, inclusive: bool = False) -> list[UnitMask]:
    """Signatures of k unit masks over one block of n images.

    Args:
        acts: (n, k, h, w) float32 activations of images ``first_image : first_image + n``.
        lo, hi: (k,) float64 open range bounds per unit (hi = +inf for a quantile threshold),
            or (n, k) per image and unit.
        set_ids: (n, sh, sw) int64 global label-set id per pixel.
        first_image: global index of the block's first image.
        valid: (n,) bool; invalid images contribute nothing.
        inclusive: ``lo <= value <= hi`` instead of the strict ``lo < value < hi``.

    Returns:
        k :class:`UnitMask`, one per unit, covering this block only.
    """
    k = acts.shape[1]
    parts: list[list[UnitMask]] = [[] for _ in range(k)]
    for img, unit, inside in _inside(acts, lo, hi, set_ids.shape[1:], valid, inclusive):
        for u, mask in enumerate(_signatures(img, unit, inside, set_ids, first_image, k)):
            parts[u].append(mask)
    return [UnitMask.concat(p) for p in parts]


def mask_pixels(acts: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: tuple[int, int],
                valid: np.ndarray, inclusive: bool = False) -> np.ndarray:
    """Pixels of each image's unit mask (the same masks as :func:`unit_masks`, uncounted by
    label set).

    Args:
        acts: (n, k, h, w) float32; lo, hi: (k,) float64 range bounds; shape: (sh, sw);
            valid: (n,) bool.

    Returns:
        (n, k) int64 mask pixels per image and unit (0 for invalid images).
    """
    n, k = acts.shape[:2]
    out = np.zeros((n, k), dtype=np.int64)
    for img, unit, inside in _inside(acts, lo, hi, shape, valid, inclusive):
        np.add.at(out, (img, unit), inside.reshape(len(inside), -1).sum(axis=1))
    return out
