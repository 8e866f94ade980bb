"""The unit pages' heat view: each row's overlay PNG, composited over the shared raw tiles, is
the unit's stored map (activations.zarr) upsampled with torch here, min-max over the row, in
jet at alpha 0.6; a method-none unit page opens on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ray_dissect.report.build import ReportResult
from ray_dissect.results import JobResults

LAYER = "body.out"


def _decode(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA")).astype(np.float64)


def _expected_rgb(maps: np.ndarray, size: int, levels: int = 32) -> np.ndarray:
    """(k, h, w) maps -> (k, size, size, 3) jet colours of the row's 32 min-max levels."""
    up = F.interpolate(torch.from_numpy(maps)[:, None], size=(size, size), mode="bilinear",
                       align_corners=False)[:, 0].double().numpy()
    scaled = (up - up.min()) / (up.max() - up.min())
    v = np.minimum(np.floor(scaled * levels), levels - 1) / (levels - 1)
    rgb = [np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)]
    return np.rint(255.0 * np.stack(rgb, axis=-1))


def test_heat_overlay_is_the_upsampled_stored_map(clustered: JobResults,
                                                  clustered_site: ReportResult) -> None:
    """Every page unit's top row: the heat PNG's colours are the stored maps upsampled
    (bilinear, align_corners=False), jet at alpha 153, gaps clear; composited over the raw
    tiles it is ``rint(raw * 0.4 + jet * 0.6)``."""
    site, acts = Path(str(clustered_site.out)), clustered.activations(LAYER)
    checked = 0
    for rec in clustered.records(LAYER):
        png = site / "units" / LAYER / f"{rec.unit}_top_heat.png"
        if not png.exists():
            continue
        index = [int(t.index) for t in rec.top_images]
        over = _decode(png)
        size = over.shape[0]
        maps = np.stack([np.asarray(acts[i, rec.unit], np.float32) for i in index])
        want = _expected_rgb(maps, size)
        for j, i in enumerate(index):
            tile = over[:, j * (size + 2): j * (size + 2) + size]
            assert (tile[..., 3] == 153).all() and (tile[..., :3] == want[j]).all(), (rec.unit, j)
            raw = np.asarray(Image.open(site / "img" / "src" / str(size) / f"{i}.jpg"),
                             np.float64)
            alpha = tile[..., 3:] / 255.0  # as the browser composites it
            shown = np.rint(tile[..., :3] * alpha + raw * (1.0 - alpha))
            assert np.abs(shown - np.rint(raw * 0.4 + want[j] * 0.6)).max() == 0
        assert (over[:, size: size + 2, 3] == 0).all()  # the gap between tiles is clear
        checked += 1
    assert checked >= 3

