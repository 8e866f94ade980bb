"""Tiles of a bilinear upsampling decide in-range pixels as torch's float32 values do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ray_dissect.concepts.masks import _run_rows
from ray_dissect.concepts.tiles import (
    AxisTiles,
    Grid,
    range_runs,
    tight_candidates,
    tile_columns,
    tile_extremes,
)


def run_pixels(starts: np.ndarray, lengths: np.ndarray, stride: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(run (m,), flat index (m,)) of every pixel of runs given by first index and length."""
    run = np.repeat(np.arange(len(lengths)), lengths)
    first = np.repeat(starts - (np.cumsum(lengths) - lengths) * stride, lengths)
    return run, first + np.arange(int(lengths.sum()), dtype=np.int64) * stride


@pytest.mark.parametrize(("n_in", "n_out"), [(7, 112), (6, 113), (13, 224), (9, 5), (4, 4)])
def test_axis_tiles_cover_every_output_once_with_torch_weights(n_in: int, n_out: int) -> None:
    """Real slots hold each output position once, and (1 - lam, lam) on (i0, i1) reproduces
    torch's 1-D bilinear interpolation of a random signal within the weight-error bound."""
    tiles = AxisTiles.make(n_in, n_out)
    pos = tiles.pos[tiles.ok]
    assert sorted(pos.tolist()) == list(range(n_out))
    x = np.random.default_rng(0).normal(size=n_in).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x)[None, None, None], size=(1, n_out),
                         mode="bilinear", align_corners=False)[0, 0, 0].numpy()
    cell = np.broadcast_to(np.arange(len(tiles.i0))[:, None], tiles.pos.shape)[tiles.ok]
    lam = tiles.lam[tiles.ok]
    got = (1 - lam) * x[tiles.i0[cell]] + lam * x[tiles.i1[cell]]
    bound = (2 * tiles.weight_error + 2.0 ** -22) * np.abs(x).max()
    assert np.abs(got - want[pos]).max() <= bound
    assert np.all(np.diff(tiles.grid) >= 0)


def test_decided_pixels_agree_with_torch_and_candidates_cover_the_mask() -> None:
    """Pixels in decided runs are in range by torch's values, the other pixels of decided
    tiles are not, and no in-range pixel lies outside the candidate tiles."""
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(40, 7, 7)).astype(np.float32)
    grid = Grid.make((7, 7), (112, 112))
    lo, hi = np.full(40, 0.3), np.full(40, 1.1)
    up = F.interpolate(torch.from_numpy(maps)[:, None], size=(112, 112), mode="bilinear",
                       align_corners=False)[:, 0].numpy().reshape(40, -1).astype(np.float64)
    truth = (up > 0.3) & (up < 1.1)
    corners = grid.corners(maps)
    cand = tight_candidates(tile_extremes(grid, corners), lo, hi)
    item, ty, tx = np.nonzero(cand)
    cols = tile_columns(grid, corners, item, ty, tx)
    runs = range_runs(grid, cols, lo[item], hi[item], inclusive=False)
    _, first, length, _ = _run_rows(grid, cols, runs)
    run, pixel = run_pixels(first, length, 112)
    tile = runs.tile[run]
    decided = ~runs.ambiguous[tile]
    assert truth[item[tile[decided]], pixel[decided]].all()
    found = np.zeros_like(truth)
    found[item[tile], pixel] = True
    covered = np.zeros_like(truth)
    for q in np.flatnonzero(~runs.ambiguous):
        rows = grid.rows.pos[ty[q]][grid.rows.ok[ty[q]]]
        cols_ = grid.cols.pos[tx[q]][grid.cols.ok[tx[q]]]
        covered[item[q], (rows[:, None] * 112 + cols_[None, :]).ravel()] = True
    assert not (truth & covered & ~found).any()
    in_cand = np.zeros_like(truth)
    for q in range(len(item)):
        rows = grid.rows.pos[ty[q]][grid.rows.ok[ty[q]]]
        cols_ = grid.cols.pos[tx[q]][grid.cols.ok[tx[q]]]
        in_cand[item[q], (rows[:, None] * 112 + cols_[None, :]).ravel()] = True
    assert not (truth & ~in_cand).any() and truth.sum() > 1000


@pytest.mark.parametrize(("n_in", "n_out"), [(7, 112), (6, 113), (13, 224), (9, 5), (4, 4)])
def test_splits_count_the_rows_at_most_the_crossing(n_in: int, n_out: int) -> None:
    """The cell lookup of ``_splits`` counts a tile column's real rows whose weight is at most
    the crossing, for crossings anywhere (below 0, above 1, infinite) except within float64
    rounding of a row weight, on every tile row (clamped edge tiles included)."""
    from ray_dissect.concepts.tiles import Columns, _splits

    grid = Grid.make((n_in, 3), (n_out, 8))
    rows = grid.rows
    rng = np.random.default_rng(0)
    ty = np.repeat(np.arange(len(rows.i0)), 400)
    thr = np.concatenate([rng.uniform(-0.5, 1.5, len(ty) - 4 * len(rows.i0)),
                          np.repeat([-np.inf, -0.2, 1.2, np.inf], len(rows.i0))])
    ty = np.concatenate([ty[:len(ty) - 4 * len(rows.i0)], np.tile(np.arange(len(rows.i0)), 4)])
    lam = np.where(rows.ok[ty], rows.lam[ty], np.nan)
    keep = ~(np.abs(lam - thr[:, None]) < 1e-9).any(axis=1)
    ty, thr, lam = ty[keep], thr[keep], lam[keep]
    q = len(ty)
    cols = Columns(np.zeros(q, np.int64), ty, np.zeros(q, np.int64), np.zeros((q, 1)),
                   np.ones((q, 1)), np.zeros(q), np.zeros(q, bool))
    got = _splits(grid, cols, thr[None], np.ones((q, 1)))[0, :, 0]
    np.testing.assert_array_equal(got, (lam <= thr[:, None]).sum(axis=1))
