"""Whole tiles counted from per-tile label-set histograms give the dense torch masks' counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.dense_masks import dense_signature

from ray_dissect.concepts import counting
from ray_dissect.concepts.kernels import KERNEL_ENV
from ray_dissect.concepts.masks import range_masks
from ray_dissect.concepts.tiles import Grid, full_tiles, tile_extremes


@pytest.fixture(autouse=True)
def _numpy_reference(monkeypatch) -> None:
    """These tests check the numpy tile walk's routes: force it (numba would bypass them)."""
    monkeypatch.setenv(KERNEL_ENV, "numpy")

def _counts(mask, n, n_sets):
    got = np.zeros((n, n_sets), np.int64)
    np.add.at(got, (mask.images, mask.sets), mask.counts)
    return got


def _smooth_maps(seed: int, n: int, k: int, src: tuple[int, int]) -> np.ndarray:
    """(n, k, *src) float32 maps near 1 with small variations (most tiles inside wide ranges),
    some exact zeros and exact repeats of one value."""
    rng = np.random.default_rng(seed)
    acts = (1.0 + 0.05 * rng.normal(size=(n, k, *src))).astype(np.float32)
    acts[0, 0] = 0.0  # all-zero map: every tile exactly 0
    acts[1, :, :2, :2] = 0.0  # zero corners beside positive ones
    acts[2, :, 3:, 3:] = np.float32(1.0)  # ties: exact repeats of a bound below
    return acts


def _check(acts, ranges, set_ids, valid, n_sets):
    got = range_masks(acts, ranges, set_ids, 0, valid)
    for r, (lo, hi, inc) in enumerate(ranges):
        want = dense_signature(acts, lo, hi, inc, set_ids, valid, n_sets)
        for u in range(acts.shape[1]):
            np.testing.assert_array_equal(_counts(got[r][u], len(acts), n_sets), want[u])


def _route(monkeypatch, always: bool) -> None:
    """Make every chunk use the tile histograms (always) or none (never)."""
    def use_tiles(self, grid, n_full, n_partial):
        if always and self.hist is None:
            self.hist = self._histograms(grid)
        return always

    monkeypatch.setattr(counting.SetCounter, "use_tiles", use_tiles)


@pytest.mark.parametrize("always", [False, True])
@pytest.mark.parametrize(("src", "shape"), [((7, 7), (112, 112)), ((6, 5), (113, 47)),
                                            ((4, 4), (4, 4))])
def test_whole_tiles_equal_dense_masks(monkeypatch, always, src, shape) -> None:
    """With the tile histograms always (or never) used (whole tiles, and partial tiles of one
    label set counted whole), every range's counts equal the dense torch masks': ranges holding
    whole maps, lo below the map minimum, bounds on exact values (1.0, 0.0), an all-zero map,
    edge tiles of sizes that are no multiple of the map's."""
    _route(monkeypatch, always)
    n, k = 10, 3
    acts = _smooth_maps(int(src[0]), n, k, src)
    rng = np.random.default_rng(1)
    set_ids = np.kron(rng.integers(0, 7, size=(n, 3, 3)),
                      np.ones((shape[0] // 3 + 1, shape[1] // 3 + 1), np.int64))
    set_ids = set_ids[:, :shape[0], :shape[1]]
    set_ids[:, ::5, 1::7] = 7  # a few isolated pixels of another set
    valid = np.ones(n, bool)
    valid[4] = False
    full = np.full(k, np.inf)
    ranges = [(np.full(k, 0.5), full, False), (np.full(k, -1.0), np.full(k, 2.0), False),
              (np.full(k, -1.0), np.full(k, 2.0), True), (np.full(k, 0.0), np.full(k, 1.0), True),
              (np.full(k, 0.0), np.full(k, 1.0), False), (np.array([0.97, 1.0, 1.02]),
                                                          np.array([1.0, 1.03, 1.1]), False)]
    _check(acts, ranges, set_ids, valid, 8)


def test_whole_tiles_with_a_redone_map_in_the_chunk(monkeypatch) -> None:
    """A pair redone by torch (a corner exactly on the bound, so ambiguous pixels) is counted
    once: its whole tiles are not added on top of its dense mask."""
    _route(monkeypatch, True)
    n, k = 6, 2
    acts = _smooth_maps(3, n, k, (7, 7))
    acts[3, 1, 2:5, 2:5] = 0.5
    set_ids = np.random.default_rng(2).integers(0, 4, size=(n, 56, 56))
    _check(acts, [(np.full(k, 0.5), np.full(k, np.inf), False)], set_ids, np.ones(n, bool), 4)


def test_histogram_path_is_taken_when_whole_tiles_abound(monkeypatch) -> None:
    """With the default threshold a block of smooth maps builds the tile histograms once."""
    built = []
    original = counting.SetCounter._histograms

    def spy(self, grid):
        built.append(1)
        return original(self, grid)

    monkeypatch.setattr(counting.SetCounter, "_histograms", spy)
    acts = _smooth_maps(5, 8, 4, (7, 7))
    set_ids = np.random.default_rng(3).integers(0, 4, size=(8, 112, 112))
    _check(acts, [(np.full(4, 0.5), np.full(4, np.inf), False),
                  (np.full(4, -1.0), np.full(4, 3.0), True)], set_ids, np.ones(8, bool), 4)
    assert built == [1]


@pytest.mark.parametrize(("src", "shape"), [((7, 7), (112, 112)), ((6, 5), (113, 47)),
                                            ((9, 8), (5, 6))])
def test_tile_extremes_bound_torch_values_and_are_attained(src, shape) -> None:
    """Every torch pixel of a tile lies within delta of [low, high], low and high are values of
    real pixels (float64), and full tiles hold only in-range pixels."""
    rng = np.random.default_rng(4)
    maps = rng.normal(size=(20, *src)).astype(np.float32)
    grid = Grid.make(src, shape)
    up = F.interpolate(torch.from_numpy(maps)[:, None], size=shape, mode="bilinear",
                       align_corners=False)[:, 0].numpy().astype(np.float64)
    low, high, delta = tile_extremes(grid, grid.corners(maps))
    lo, hi = np.full(20, -0.5), np.full(20, 0.8)
    full = full_tiles((low, high, delta), lo, hi)
    assert full.any()
    r, c = grid.rows, grid.cols
    for ty in range(len(r.i0)):
        rows = r.pos[ty][r.ok[ty]]
        for tx in range(len(c.i0)):
            block = up[:, rows][:, :, c.pos[tx][c.ok[tx]]].reshape(20, -1)
            assert np.all(block.min(axis=1) >= low[:, ty, tx] - delta[:, ty, tx])
            assert np.all(block.max(axis=1) <= high[:, ty, tx] + delta[:, ty, tx])
            assert np.all(np.abs(block.min(axis=1) - low[:, ty, tx]) <= delta[:, ty, tx])
            inside = (block > lo[:, None]) & (block < hi[:, None])
            assert inside[full[:, ty, tx]].all()


@pytest.mark.parametrize(("src", "shape"), [((7, 7), (112, 112)), ((6, 5), (113, 47))])
def test_extremes_of_near_tiles_only_keep_candidates_and_whole_tiles(src, shape) -> None:
    """With a high lower bound most tiles are not evaluated, yet every range gets the same
    candidate and whole tiles as from every tile's extremes, and the evaluated tiles' extremes
    are those of tile_extremes; range_masks then equals the dense torch masks."""
    from ray_dissect.concepts.masks import _extremes
    from ray_dissect.concepts.tiles import tight_candidates

    rng = np.random.default_rng(5)
    maps = np.maximum(rng.normal(size=(30, *src)), 0).astype(np.float32)
    maps[0] = np.nan  # non-finite: evaluated (and redone by torch in range_masks)
    grid = Grid.make(src, shape)
    corners = grid.corners(maps)
    ranges = [(np.full(30, 1.8), np.full(30, np.inf)), (np.full(30, 2.0), np.full(30, 2.6))]
    reach = 1.8 - 2 * grid.margin * np.abs(maps).max(axis=(1, 2))
    got, want = _extremes(grid, corners, reach), tile_extremes(grid, corners)
    assert np.isinf(got[1]).mean() > 0.5  # most tiles skipped
    evaluated = ~np.isneginf(got[1])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g[evaluated], w[evaluated])
    for lo, hi in ranges:
        np.testing.assert_array_equal(tight_candidates(got, lo, hi), tight_candidates(want, lo, hi))
        np.testing.assert_array_equal(full_tiles(got, lo, hi), full_tiles(want, lo, hi))
    set_ids = rng.integers(0, 5, size=(30, *shape))
    acts = maps.reshape(30, 1, *src)
    _check(acts, [(np.full(1, 1.8), np.full(1, np.inf), False), (np.full(1, 2.0), np.full(1, 2.6),
                                                                 True)],
           set_ids, np.ones(30, bool), 5)
