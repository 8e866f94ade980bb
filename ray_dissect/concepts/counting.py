"""Pixel counts of unit masks per (pair, label set), from vertical runs, single pixels and
whole tiles (the counting half of :func:`ray_dissect.concepts.masks.range_masks`).

Per block of images the label-set changes down each column are listed once, so a run is cut
into its one-set segments by index arithmetic; per chunk of (image, unit) pairs the segments
are summed by one weighted ``bincount`` over (pair, set) bins. Optional per-tile label-set
histograms of the block let whole tiles, and runs in tiles of one label set, be counted
without cutting.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from ray_dissect.concepts.tiles import Grid

TILE_HISTOGRAM_PAYS = 4
"""A whole tile counted from its histogram saves about as much as this many partial tiles
whose one-set runs are not cut; the histograms are built once the call's tiles (projected
from a chunk) save twice the cost of walking every tile of the block."""

SPARSE_BINS = 8
"""A chunk's (pair, set) sums are sorted out instead of binned densely when the bins outnumber
the entries this many times (the bins grow as the square of the chunk)."""


class SetCounter:
    """Pixel counts per (pair, label set) for each range.

    Mask pixels come as vertical runs (consecutive rows of one column). Per block, the
    label-set changes down each column are listed once (row of each change, column by column)
    with their running count, so a run is cut into its segments of one label set by index
    arithmetic and each segment is counted at once. A chunk's counts are one weighted
    ``bincount`` over (pair, set) bins, with the chunk's sets renumbered so that the bins stay
    few. Pairs are numbered image-major; the entries are finally ordered by unit, image and
    label set, the order :class:`UnitMask` entries keep.
    """

    def __init__(self, units: np.ndarray, images: np.ndarray, set_ids: np.ndarray,
                 n_ranges: int) -> None:
        self.units, self.images = units, images
        sh, sw = set_ids.shape[1:]
        self.pixels, self.width = sh * sw, sw
        self.flat = set_ids.reshape(-1)
        flags = np.zeros(set_ids.shape, dtype=bool)
        flags[:, 1:] = set_ids[:, 1:] != set_ids[:, :-1]
        self.changes = _running_count(flags).reshape(-1)
        by_column = np.flatnonzero(np.ascontiguousarray(flags.transpose(0, 2, 1)))
        self.change_row = by_column % sh
        per_column = np.bincount(by_column // sh, minlength=len(set_ids) * sw)
        self.column_first = np.cumsum(per_column) - per_column
        self.entries: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in range(n_ranges)]
        self.n_images = set_ids.shape[0]
        self.hist: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def stride(self) -> int:
        """1 + the block's largest label-set id (computed on first use)."""
        if "_stride" not in self.__dict__:
            self.__dict__["_stride"] = int(self.flat.max(initial=0)) + 1
        return int(self.__dict__["_stride"])

    def use_tiles(self, grid: Grid, n_full: int, n_partial: int) -> bool:
        """Whether to count whole and one-set tiles from the tile histograms, building them
        (about the cost of walking every tile of the block once) when there are enough whole
        tiles (which are then not walked) and partial ones (whose one-set runs are then not
        cut) for that to pay."""
        n_block = self.n_images * len(grid.rows.i0) * len(grid.cols.i0)
        worth = TILE_HISTOGRAM_PAYS * n_full + n_partial
        if self.hist is None and worth >= 2 * n_block:
            self.hist = self._histograms(grid)
        return self.hist is not None

    def _histograms(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tile of the block (image-major, then tile row and column): its label sets and
        pixel counts, as (first entry (t + 1,), sets (e,), counts (e,)) int64, sets ascending
        within a tile."""
        rows, cols = grid.rows, grid.cols
        nty, ntx = len(rows.i0), len(cols.i0)
        col_tile = np.zeros(self.width, np.int64)
        col_tile[cols.pos[cols.ok]] = np.repeat(np.arange(ntx), cols.n_real)
        img, ty, x = (a.ravel() for a in np.meshgrid(
            np.arange(self.n_images), np.arange(nty), np.arange(self.width), indexing="ij"))
        p0 = img * self.pixels + rows.pos[ty, 0] * self.width + x
        run, p, weight = self._segments(p0, rows.n_real[ty])
        tile = ((img * nty + ty) * ntx + col_tile[x])[run]
        keys, inverse = np.unique(tile * self.stride + self.flat[p], return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=weight).astype(np.int64)
        first = np.searchsorted(keys // self.stride, np.arange(self.n_images * nty * ntx + 1))
        return first, keys % self.stride, counts

    def _one_set(self, img: np.ndarray, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(runs (m,) bool in a tile of one label set, that set (m1,) int64) of runs in block
        images ``img`` and tiles ``tile``; no run when there are no histograms."""
        if self.hist is None:
            return np.zeros(len(img), bool), np.zeros(0, np.int64)
        first, sets, _ = self.hist
        t = img * ((len(first) - 1) // self.n_images) + tile
        one = first[t + 1] - first[t] == 1
        return one, sets[first[t[one]]]

    def _tile_entries(self, img: np.ndarray, tiles: tuple[np.ndarray, np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local pair, set, count) of the histogram entries of whole tiles (local pair, tile
        index ty * tx_count + tx)."""
        local, tile = tiles
        if self.hist is None or not len(local):
            return (np.zeros(0, np.int64),) * 3
        first, sets, counts = self.hist
        per_image = (len(first) - 1) // self.n_images
        t = img[local] * per_image + tile
        n = first[t + 1] - first[t]
        entry = np.arange(int(n.sum())) + np.repeat(first[t] - (np.cumsum(n) - n), n)
        return np.repeat(local, n), sets[entry], counts[entry]

    def _segments(self, p0: np.ndarray, length: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(run, first pixel (block-flat), length), each (m,) int64, of the one-set segments
        of vertical runs starting at block-flat pixels ``p0`` (r,) with ``length`` (r,);
        a run without a label-set change is its own segment (most are)."""
        c0 = self.changes[p0]
        count = self.changes[p0 + (length - 1) * self.width] - c0 + 1
        multi = np.flatnonzero(count > 1)
        if not len(multi):
            return np.arange(len(p0)), p0, length
        single = np.flatnonzero(count == 1)
        run, p, weight = self._cut(p0[multi], length[multi], c0[multi], count[multi])
        return (np.concatenate([single, multi[run]]), np.concatenate([p0[single], p]),
                np.concatenate([length[single], weight]))

    def _cut(self, p0: np.ndarray, length: np.ndarray, c0: np.ndarray, count: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_segments` of runs crossing ``count - 1`` label-set changes, ``c0`` the
        running change count at their first pixel."""
        img, rem = np.divmod(p0, self.pixels)
        y0, x = np.divmod(rem, self.width)
        run = np.repeat(np.arange(len(p0)), count)
        j = np.arange(len(run)) - np.repeat(np.cumsum(count) - count, count)
        base = (self.column_first[img * self.width + x] + c0)[run] + j
        last = max(len(self.change_row) - 1, 0)
        rows = self.change_row if len(self.change_row) else np.zeros(1, np.int64)
        start = np.where(j == 0, y0[run], rows[np.clip(base - 1, 0, last)])
        stop = np.where(j == count[run] - 1, (y0 + length)[run], rows[np.clip(base, 0, last)])
        return run, p0[run] + (start - y0[run]) * self.width, stop - start

    def count(self, r: int, pairs: np.ndarray, runs: tuple[np.ndarray, ...],
              pixels: tuple[np.ndarray, np.ndarray],
              tiles: tuple[np.ndarray, np.ndarray]) -> None:
        """Count range ``r``'s mask pixels of a chunk of consecutive pair numbers ``pairs``.

        Args:
            runs: (local pair, first pixel row-major in its image, length, tile index) of
                vertical runs; a run in a tile of one label set (by the tile histograms) is
                counted whole.
            pixels: (local pair, pixel row-major) of single pixels.
            tiles: (local pair, tile index) of whole tiles (see :meth:`_tile_entries`).
        """
        img = self.images[pairs]
        local, pix, length, tile = runs
        one, one_set = self._one_set(img[local], tile)
        if len(one_set):
            cut = np.flatnonzero(~one)
            local, pix, length, one_local, one_length = (
                local[cut], pix[cut], length[cut], local[one], length[one])
        else:
            one_local = one_length = np.zeros(0, np.int64)
        run, p, weight = self._segments(img[local] * self.pixels + pix, length)
        t_loc, t_sets, t_counts = self._tile_entries(img, tiles)
        loc = np.concatenate([local[run], one_local, pixels[0], t_loc])
        sets = np.concatenate([self.flat[p], one_set,
                               self.flat[img[pixels[0]] * self.pixels + pixels[1]], t_sets])
        weight = np.concatenate([weight, one_length, np.ones(len(pixels[0]), np.int64),
                                 t_counts])
        self._add(r, pairs, loc, sets, weight)

    def _add(self, r: int, pairs: np.ndarray, loc: np.ndarray, sets: np.ndarray,
             weight: np.ndarray) -> None:
        """Sum ``weight`` per (local pair, set) (m,) into range ``r``'s entries."""
        seen = np.zeros(int(sets.max(initial=0)) + 1, dtype=bool)
        seen[sets] = True
        chunk_sets = np.flatnonzero(seen)
        n_sets = max(len(chunk_sets), 1)
        keys = loc * n_sets + (np.cumsum(seen) - 1)[sets]
        if len(pairs) * n_sets > SPARSE_BINS * len(keys):  # few of the bins are hit: sort
            nz, inverse = np.unique(keys, return_inverse=True)
            sums = np.bincount(inverse.reshape(-1), weights=weight, minlength=len(nz))
        else:
            bins = np.bincount(keys, weights=weight, minlength=len(pairs) * n_sets)
            nz = np.flatnonzero(bins)
            sums = bins[nz]
        self.entries[r].append((pairs[nz // n_sets], chunk_sets[nz % n_sets],
                                sums.astype(np.int64)))

    def signatures(self, r: int, k: int, first_image: int
                   ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The k signatures of range ``r`` as (global image, set, count) (m,) int32 arrays
        (12 bytes an entry: signatures are what a scoring task holds most of), entries
        reordered unit-major, then by image and set."""
        return ordered_signatures(self.units, self.images, self.entries[r], k, first_image)


def ordered_signatures(units: np.ndarray, images: np.ndarray,
                       entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int,
                       first_image: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The k signatures of the (pair, set, count) ``entries`` of pairs (``units``,
    ``images``) (p,) as (global image, set, count) (m,) int32 arrays, ordered unit-major, then
    by image and set."""
    pair, sets, counts = (np.concatenate([e[i] for e in entries] or [np.zeros(0, np.int64)])
                          for i in range(3))
    order = np.lexsort((sets, images[pair], units[pair]))
    pair, sets, counts = pair[order], sets[order].astype(np.int32), counts[order]
    counts = counts.astype(np.int32)
    cut = np.searchsorted(units[pair], np.arange(k + 1))
    glob = (images[pair] + first_image).astype(np.int32)
    return [(glob[a:b], sets[a:b], counts[a:b]) for a, b in pairwise(cut.tolist())]


def _running_count(flags: np.ndarray) -> np.ndarray:
    """(n, sh, sw) int8/int16/int32 number of True flags at or above each pixel of its column
    (row by row: much faster than ``cumsum`` along a middle axis; the narrowest type that
    holds sh, for less memory traffic)."""
    sh = flags.shape[1]
    out: np.ndarray = flags.astype(np.int8 if sh < 2 ** 7 else np.int16 if sh < 2 ** 15
                                   else np.int32)
    for y in range(1, out.shape[1]):
        np.add(out[:, y], out[:, y - 1], out=out[:, y])
    return out
