"""Pictures of the visual pages: PNGs written under the report root with their display size,
and the images as the network saw them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.pages import Site
from ray_dissect.results import JobResults

SHOWN_MIN = 112
"""Pictures smaller than this are shown enlarged (pixelated)."""


def _put(site: Site, rel: str, data: bytes) -> str:
    path = site.out / rel
    storage.makedirs(path.parent)
    storage.write_bytes(path, data)
    return rel


def scale_for(shape: tuple[int, ...]) -> int:
    """The integer factor that shows a picture at least :data:`SHOWN_MIN` px on its short
    side."""
    return max(1, -(-SHOWN_MIN // max(1, min(int(shape[0]), int(shape[1])))))


def picture(site: Site, rel: str, data: bytes, shape: tuple[int, ...], alt: str,
             scale: int | None = None) -> dict[str, Any]:
    """Write a PNG; what the template needs to show it (src, display size: ``scale`` times
    its size, default :func:`scale_for`; alt)."""
    h, w = int(shape[0]), int(shape[1])
    scale = scale_for(shape) if scale is None else scale
    return {"src": _put(site, rel, data), "width": w * scale, "height": h * scale, "alt": alt}


def network_image(results: JobResults, index: int, size: int) -> tuple[np.ndarray, bool]:
    """Image ``index`` as the network saw it, (size, size, 3) uint8, and whether it was
    readable (an unreadable one is shown grey)."""
    try:
        return vt.network_view(results.view(index), size), True
    except BadSampleError:
        return np.full((size, size, 3), 128, np.uint8), False


def image_name(results: JobResults, index: int) -> str:
    return results.dataset.samples[index].image
