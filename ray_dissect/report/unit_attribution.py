"""Per-unit attribution on the unit pages: for a unit with a page, each of its top images with
the map of which pixels drive the unit drawn over it (the ``unit_attribution`` stage's parts,
``unit_attribution/<layer>/<block>.npz``; pytorch-grad-cam's ``show_cam_on_image`` formula).

Files, relative to the report root: ``units/<layer>/<unit>_attr_<j>.png`` (j-th top image).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.job.layout import done_marker, layer_key
from ray_dissect.report import visual_tiles as vt
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath

SHOWN_MIN = 112
"""Overlays smaller than this are shown enlarged (pixelated)."""


def read_parts(root: AnyPath, layer: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Unit -> ((k,) int64 top images, -1 padded; (k, H, W) float32 maps), from every part
    with its done marker."""
    folder = root / "unit_attribution" / layer_key(layer)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for rel in storage.list_files(folder):
        path = folder / rel
        if rel.endswith(".npz") and done_marker(path).exists():
            z = storage.load_npz(path)
            out |= {int(u): (np.asarray(z["images"][i]), np.asarray(z["maps"][i]))
                    for i, u in enumerate(z["units"])}
    return out


class UnitAttributionBlock:
    """The per-unit attribution maps of one render block's units.

    Args:
        results: the job; layer: the layer; units: the block [u0, u1).
    """

    def __init__(self, results: JobResults, layer: str, units: tuple[int, int]) -> None:
        section = results.spec.analyses.unit_attribution
        self.results, self.layer, self.key = results, layer, layer_key(layer)
        self.parts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if section is not None and section.layer == layer:
            self.parts = {u: p for u, p in read_parts(results.root, layer).items()
                          if units[0] <= u < units[1]}
        self.method = section.method if section is not None else ""

    def digest(self) -> str | None:
        """A digest of the block's maps (None without any), for the block's done marker."""
        if not self.parts:
            return None
        h = hashlib.sha256()
        for u in sorted(self.parts):
            h.update(self.parts[u][0].tobytes())
            h.update(np.ascontiguousarray(self.parts[u][1]).tobytes())
        return h.hexdigest()[:16]

    def write(self, out: AnyPath, unit: int) -> dict[str, Any] | None:
        """Write a unit's overlays; what ``unit.html`` shows of them (None without maps)."""
        if unit not in self.parts:
            return None
        images, maps = self.parts[unit]
        size = self.results.spec.model.preprocess.size
        scale = max(1, -(-SHOWN_MIN // size))
        shown = []
        for j, (index, heat) in enumerate(zip(images.tolist(), maps, strict=True)):
            if index < 0 or not np.any(heat):
                continue
            shown.append({"src": f"{unit}_attr_{j}.png", "rank": j + 1, "index": index,
                          "name": self.results.dataset.samples[index].image,
                          "width": size * scale, "height": size * scale})
            self._overlay(out, unit, j, index, heat, size)
        return {"method": self.method, "images": shown}

    def _overlay(self, out: AnyPath, unit: int, j: int, index: int, heat: np.ndarray,
                 size: int) -> None:
        from ray_dissect.visualize.display import overlay

        image = vt.network_view(self.results.view(index), size)
        path = out / f"units/{self.key}/{unit}_attr_{j}.png"
        storage.makedirs(path.parent)
        storage.write_bytes(path, vt.rgb_png(overlay(image, heat)))
