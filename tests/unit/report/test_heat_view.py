"""The unit pages' heat view at the maps' own size: each row's greyscale PNG holds the unit's
stored maps (activations.zarr) min-max scaled over the row, each framed by a copy of its edge;
the page lays one tile box per map over it; the page's colour filter is jet itself. What a
browser draws from these is checked in test_browser.py (against torch's bilinear upsampling)."""

from __future__ import annotations

import io
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
from PIL import Image

from ray_dissect.report.build import ReportResult
from ray_dissect.report.heat import encode_heat, heat_values, jet_filter
from ray_dissect.results import JobResults

LAYER = "body.out"


def _jet(v: np.ndarray) -> np.ndarray:
    """The jet colour map written out independently: (n,) in [0, 1] -> (n, 3)."""
    return np.stack([np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)],
                    axis=-1)


def _expected(maps: np.ndarray) -> np.ndarray:
    """(k, h, w) maps -> the PNG's (h + 2, k (w + 2)) values, by hand."""
    scaled = (maps - maps.min()) / (maps.max() - maps.min())
    values = 1 + np.rint(254 * scaled)
    k, h, w = maps.shape
    out = np.zeros((h + 2, k * (w + 2)))
    for j in range(k):
        cell = np.zeros((h + 2, w + 2))
        cell[1:-1, 1:-1] = values[j]
        cell[0, 1:-1], cell[-1, 1:-1] = values[j][0], values[j][-1]
        cell[:, 0], cell[:, -1] = cell[:, 1], cell[:, -2]
        out[:, j * (w + 2): (j + 1) * (w + 2)] = cell
    return out


def test_heat_png_holds_the_stored_maps_at_their_own_size(clustered: JobResults,
                                                         clustered_site: ReportResult) -> None:
    """Every page unit's top row: the heat PNG is greyscale with value 0 transparent, and its
    values are the stored maps scaled over the row (by hand above), each framed by its edge;
    the page's heat layer names its size and holds one tile box per image."""
    site, acts = Path(str(clustered_site.out)), clustered.activations(LAYER)
    checked = 0
    for rec in clustered.records(LAYER):
        png = site / "units" / LAYER / f"{rec.unit}_top_heat.png"
        if not png.exists():
            continue
        image = Image.open(png)
        assert image.mode == "L" and image.info.get("transparency") == 0
        index = [int(t.index) for t in rec.top_images]
        maps = np.stack([np.asarray(acts[i, rec.unit], np.float64) for i in index])
        assert np.array_equal(np.asarray(image, np.float64), _expected(maps)), rec.unit
        page = (site / "units" / LAYER / f"{rec.unit}.html").read_text()
        layer = re.search(r'<div class="ov heat" data-ov=heat style="background-image:url\('
                          rf'{rec.unit}_top_heat\.png\);--k:(\d+);--mh:(\d+);--mw:(\d+)">'
                          r'((?:<i style=--j:\d+></i>)*)</div>', page)
        assert layer is not None, rec.unit
        assert [int(g) for g in layer.groups()[:3]] == [len(index), *maps.shape[1:]]
        assert re.findall(r"--j:(\d+)", layer.group(4)) == [str(j) for j in range(len(index))]
        checked += 1
    assert checked >= 3


def test_non_finite_values_are_transparent_and_a_flat_row_is_uniform() -> None:
    """A NaN or inf cell is 0 (transparent), the rest scale over the finite values; a row
    whose maps are all equal is 1 everywhere."""
    maps = np.array([[[0.0, 1.0], [np.nan, 2.0]], [[np.inf, 4.0], [3.0, 0.0]]])
    # 254 * 3/4 = 190.5 rounds to even
    assert heat_values(maps).tolist() == [[[1, 65], [0, 128]], [[0, 255], [191, 1]]]
    assert (heat_values(np.full((2, 3, 3), 5.0)) == 1).all()
    decoded = np.asarray(Image.open(io.BytesIO(encode_heat(heat_values(maps)))))
    assert decoded.shape == (4, 8) and decoded[2, 1] == 0 and decoded[1, 6] == 255


def test_the_page_filter_is_jet() -> None:
    """The filter's three tables, interpolated linearly as feComponentTransfer does, are jet at
    every value (jet's knots are multiples of 1/8); alpha is 0.6; it works in sRGB; report.js
    carries the same markup for pages that do not."""
    markup = jet_filter()
    tables = re.findall(r'<feFunc([RGB]) type="table" tableValues="([^"]+)"/>', markup)
    assert [c for c, _ in tables] == ["R", "G", "B"]
    v = np.linspace(0.0, 1.0, 1001)
    for c, (_, values) in enumerate(tables):
        knots = np.array([float(x) for x in values.split()])
        got = np.interp(v, np.linspace(0.0, 1.0, len(knots)), knots)
        assert np.abs(got - _jet(v)[:, c]).max() < 1e-12
    assert '<feFuncA type="linear" slope="0.6"/>' in markup
    assert 'color-interpolation-filters="sRGB"' in markup
    js = files("ray_dissect.report").joinpath("templates", "assets", "report.js").read_text()
    assert f"'{markup}'" in js
