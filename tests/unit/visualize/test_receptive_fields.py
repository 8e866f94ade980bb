"""Empirical receptive fields: windows, seeded noise, discrepancy, painting, consolidation, size."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from ray_dissect.errors import ModelError, SpecError
from ray_dissect.visualize.receptive_fields import (
    FieldMap,
    NoiseFill,
    OcclusionGrid,
    RFAccumulator,
    discrepancy_maps,
    occluded_batches,
    paint,
    rf_size,
    window_noise,
)


def test_window_count_and_remainder() -> None:
    """224 / 11 / 3 gives 72 x 72 = 5,184 windows, 224 / 5 / 5 gives 44 x 44; the remainder is
    occluded only on request."""
    grid = OcclusionGrid(224, 224)
    assert grid.shape == (72, 72) and grid.n_windows == 5184
    assert grid.origins().shape == (5184, 2) and grid.rows[-1] == 213
    assert OcclusionGrid(224, 224, size=5, stride=5).n_windows == 44 * 44
    assert OcclusionGrid(33, 32, cover_remainder=True).shape == (9, 8)
    assert OcclusionGrid(33, 32, cover_remainder=True).rows[-1] == 22
    assert OcclusionGrid(33, 32).shape == (8, 8)
    with pytest.raises(SpecError):
        OcclusionGrid(8, 8, size=11)


def _collect(image: torch.Tensor, batch_size: int, seed: int,
             image_index: int) -> tuple[np.ndarray, torch.Tensor]:
    chunks = list(occluded_batches(image, batch_size=batch_size, seed=seed,
                                   image_index=image_index))
    assert all(len(p) == len(b) <= batch_size for p, b in chunks)
    return np.concatenate([p for p, _ in chunks]), torch.cat([b for _, b in chunks])


def test_seeded_noise_is_independent_of_batching() -> None:
    """Batches of 7 and of 64 hold the same copies; each differs from the image in its window."""
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    pos7, copies7 = _collect(image, 7, seed=5, image_index=3)
    pos64, copies64 = _collect(image, 64, seed=5, image_index=3)
    np.testing.assert_array_equal(pos7, pos64)
    torch.testing.assert_close(copies7, copies64, rtol=0, atol=0)
    assert copies7.shape == (64, 3, 32, 32) and copies7.device == image.device
    noise = window_noise(OcclusionGrid(32, 32), seed=5, image_index=3)
    for k in (0, 9, 63):
        r, c = pos7[k]
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[r:r + 11, c:c + 11] = False
        torch.testing.assert_close(copies7[k][:, outside], image[:, outside], rtol=0, atol=0)
        torch.testing.assert_close(copies7[k][:, r:r + 11, c:c + 11], noise[k], rtol=0, atol=0)
    assert 0 <= float(noise.min()) and float(noise.max()) <= 1
    assert abs(float(noise.mean()) - 120 / 255) < 0.02
    other = window_noise(OcclusionGrid(32, 32), seed=5, image_index=4)
    assert not torch.equal(noise, other)


def test_paint_averages_covering_windows() -> None:
    """Hand example, 6 x 6 input, 4 x 4 windows at stride 2: the mean of the covering windows,
    or the seed's last window with overwrite."""
    grid = OcclusionGrid(6, 6, size=4, stride=2)
    values = np.array([[[1.0, 2.0], [3.0, 4.0]]])
    mean = paint(values, grid)[0]
    assert mean.dtype == np.float32 and mean.shape == (6, 6)
    assert mean[0, 0] == 1 and mean[0, 2] == 1.5 and mean[2, 2] == 2.5 and mean[5, 5] == 4
    assert mean[2, 0] == 2 and mean[5, 0] == 3
    last = paint(values, grid, overwrite=True)[0]
    assert last[0, 0] == 1 and last[0, 2] == 2 and last[2, 2] == 4 and last[3, 1] == 3


class _SmallNet(nn.Module):
    """A random conv -> ReLU -> maxpool probe with 4 units on 8 x 8 maps (16 x 16 input)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)


def test_discrepancy_values_match_direct_occlusion() -> None:
    """Per-window values equal a direct forward of copies occluded in the test, for Zhou's change
    at the clean peak and for the seed's signed max (compat)."""
    model = _SmallNet().eval()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    grid = OcclusionGrid(16, 16, size=5, stride=3)
    fill = NoiseFill.constant(0.3)
    with torch.no_grad():
        clean = model(image[None])[0]
        copies = []
        for r in grid.rows:
            for c in grid.cols:
                copy = image.clone()
                copy[:, r:r + 5, c:c + 5] = 0.3
                copies.append(copy)
        diff = (clean[None] - model(torch.stack(copies))).flatten(2).numpy()
    flat = clean.flatten(1).argmax(1).numpy()
    zhou = discrepancy_maps(model, image, grid=grid, batch_size=5, fill=fill)
    seed = discrepancy_maps(model, image, grid=grid, batch_size=16, fill=fill, compat=True)
    np.testing.assert_allclose(zhou.values.reshape(4, -1), diff[:, np.arange(4), flat].T, atol=1e-5)
    np.testing.assert_allclose(seed.values.reshape(4, -1), diff.max(2).T, atol=1e-5)
    np.testing.assert_array_equal(zhou.peaks, np.stack([flat // 8, flat % 8], 1))
    np.testing.assert_allclose(zhou.centres, 0.5 + 2 * zhou.peaks)
    assert zhou.maps.shape == (4, 16, 16) and zhou.maps.dtype == np.float32
    np.testing.assert_allclose(seed.maps, paint(seed.values, grid, overwrite=True))
    with pytest.raises(ModelError):
        discrepancy_maps(lambda x: x.sum((1, 2, 3)), image, grid=grid)


class _Boxes(nn.Module):
    """Two planted units: all-ones 9 x 9 and 5 x 5 summing convolutions, stride 1, 'same'."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Conv2d(3, 1, 9, padding=4, bias=False)
        self.small = nn.Conv2d(3, 1, 5, padding=2, bias=False)
        nn.init.ones_(self.big.weight)
        nn.init.ones_(self.small.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.big(x), self.small(x)], dim=1)


SIDE, OCC, STRIDE = 40, 11, 3
PEAKS = [(18, 18), (19, 20), (20, 19)]  # three grid phases


def _tent(q: tuple[int, int], radius: float = 8.0) -> np.ndarray:
    """A separable tent, wider than the footprints, so each box sum peaks only at q."""
    d = np.arange(SIDE)
    ty = np.clip(1 - np.abs(d - q[0]) / radius, 0, None)
    tx = np.clip(1 - np.abs(d - q[1]) / radius, 0, None)
    return np.outer(ty, tx)


def _brute_paint(window_value: Callable[[int, int], float]) -> np.ndarray:
    """Painted map by brute force: each pixel's mean over the windows covering it."""
    origins = range(0, SIDE - OCC + 1, STRIDE)
    painted = np.zeros((SIDE, SIDE))
    for y in range(SIDE):
        for x in range(SIDE):
            vals = [window_value(a, b) for a in origins for b in origins
                    if a <= y < a + OCC and b <= x < b + OCC]
            painted[y, x] = np.mean(vals) if vals else 0.0
    return painted


def _shift(painted: np.ndarray, q: tuple[int, int]) -> np.ndarray:
    """Translates so that pixel q lands on (SIDE // 2, SIDE // 2); what leaves is dropped."""
    shifted = np.zeros_like(painted)
    dy, dx = SIDE // 2 - q[0], SIDE // 2 - q[1]
    for y in range(SIDE):
        for x in range(SIDE):
            if 0 <= y + dy < SIDE and 0 <= x + dx < SIDE:
                shifted[y + dy, x + dx] = painted[y, x]
    return shifted


def _content_in_window(content: np.ndarray, a: int, b: int) -> float:
    """d of the window at (a, b): the footprint's content that a black window hides."""
    return float(content[a:a + OCC, b:b + OCC].sum())


def _dot_in_window(q: tuple[int, int], a: int, b: int) -> float:
    """d of the window at (a, b) for a dot of 1 in 3 channels: 3 if the window hides it."""
    return 3.0 * (a <= q[0] < a + OCC and b <= q[1] < b + OCC)


def _half_max(rf: np.ndarray) -> tuple[float, float, float]:
    rows, cols = np.nonzero(rf >= rf.max() / 2)
    return math.sqrt(rows.size), rows.mean() - SIDE // 2, cols.mean() - SIDE // 2


def _field(images: list[np.ndarray], centres_from_peaks: bool) -> np.ndarray:
    model = _Boxes().eval()
    grid = OcclusionGrid(SIDE, SIDE, OCC, STRIDE)
    acc = RFAccumulator(2, SIDE, SIDE)
    for index, img in enumerate(images):
        x = torch.tensor(np.stack([img] * 3), dtype=torch.float32)
        d = discrepancy_maps(model, x, grid=grid, batch_size=32, image_index=index,
                             fill=NoiseFill.constant(0.0))
        acc.add(d.maps, None if centres_from_peaks else d.centres)
    return acc.result()


def test_planted_footprints_give_centred_fields_of_the_expected_size() -> None:
    """Tent images through 9 x 9 and 5 x 5 summing units: the consolidated field equals the
    brute-force mean over windows overlapping each footprint, is centred, and the 9 x 9 one is
    larger."""
    images = [_tent(q) for q in PEAKS]
    rf = _field(images, centres_from_peaks=False)
    for unit, half in ((0, 4), (1, 2)):
        refs = []
        for img, (qy, qx) in zip(images, PEAKS, strict=True):
            box = np.zeros((SIDE, SIDE))
            box[qy - half:qy + half + 1, qx - half:qx + half + 1] = 3 * img[
                qy - half:qy + half + 1, qx - half:qx + half + 1]
            painted = _brute_paint(partial(_content_in_window, box))
            refs.append(_shift(painted, (qy, qx)))
        expected = np.mean(refs, axis=0)
        np.testing.assert_allclose(rf[unit], expected, rtol=1e-4, atol=1e-4)
        side, dy, dx = _half_max(expected)
        size = rf_size(rf[unit])
        assert size.side == pytest.approx(side)
        assert size.offset == pytest.approx((dy, dx))
        assert abs(size.offset[0]) <= 1 and abs(size.offset[1]) <= 1
    big, small = rf_size(rf[0]).side, rf_size(rf[1]).side
    assert 9 <= big <= 9 + OCC and 5 <= small < big


def test_single_dot_field_is_set_by_the_occluder() -> None:
    """One bright dot: both units see d = 3 [dot in window], so the field is the occluder's (the
    same for both footprints): brute force re-centred on each map's peak plateau, centred."""
    dots = [(18, 18), (19, 21)]
    images, refs = [], []
    for q in dots:
        img = np.zeros((SIDE, SIDE))
        img[q] = 1.0
        images.append(img)
        painted = _brute_paint(partial(_dot_in_window, q))
        rows, cols = np.nonzero(painted == painted.max())
        refs.append(_shift(painted, (math.floor(rows.mean() + 0.5),
                                     math.floor(cols.mean() + 0.5))))
    rf = _field(images, centres_from_peaks=True)
    expected = np.mean(refs, axis=0)
    for unit in (0, 1):
        np.testing.assert_allclose(rf[unit], expected, atol=1e-5)
    size = rf_size(rf[0])
    assert size.side == pytest.approx(_half_max(expected)[0])
    assert abs(size.offset[0]) <= 1 and abs(size.offset[1]) <= 1


def test_field_map_and_normalised_fill() -> None:
    """The proportional field map puts feature centres on input pixel centres; a normalised fill
    is the same fill in normalised units."""
    fm = FieldMap.proportional((224, 224), (7, 7))
    np.testing.assert_allclose(fm.to_input(np.array([[0, 6]])), [[15.5, 207.5]])
    fill = NoiseFill().normalized((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    assert fill.mean[0] == pytest.approx((120 / 255 - 0.5) / 0.2)
    assert fill.std[2] == pytest.approx(60 / 255 / 0.5)
    assert fill.high[1] == pytest.approx((1 - 0.4) / 0.25)


def test_kept_units_are_the_rows_of_the_whole_layer() -> None:
    """units=[3, 1] returns exactly rows 3 and 1 (in that order) of the all-units result."""
    model = _SmallNet().eval()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    grid = OcclusionGrid(16, 16, size=5, stride=3)
    full = discrepancy_maps(model, image, grid=grid, batch_size=8, seed=1, image_index=7)
    kept = discrepancy_maps(model, image, grid=grid, batch_size=8, seed=1, image_index=7,
                            units=[3, 1])
    for name in ("values", "maps", "peaks", "centres", "activation"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(full, name)[[3, 1]], name)


def test_paint_of_many_units_equals_one_at_a_time() -> None:
    """Painting a stack of units equals painting each alone (and an empty stack is empty)."""
    grid = OcclusionGrid(20, 17, size=5, stride=4, cover_remainder=True)
    values = np.random.default_rng(3).normal(size=(6, *grid.shape))
    stacked = paint(values, grid)
    for u in range(6):
        np.testing.assert_allclose(stacked[u], paint(values[u:u + 1], grid)[0], rtol=1e-6)
    assert paint(values[:0], grid).shape == (0, 20, 17)
