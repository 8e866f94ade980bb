"""Compiled label-set groupings: each image's sets per pixel (unit masks) and the concept
index's per-pixel label-tuple grouping; numpy stays the reference (same results)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect.concepts.jit import jit, kernel_name

SMALL_SETS = 64
"""An image with more distinct label sets than this is grouped by sorting instead of a
linear search over the sets seen so far."""


@jit
def _group_image(flat: Any, local: Any, found: Any) -> int:  # pragma: no cover - compiled
    """Local set ids of one image's pixels ``flat`` (q,) int64 into ``local`` (q,) int32,
    its distinct sets ascending into ``found`` (>= SMALL_SETS + 1,); returns their number,
    or -1 when there are more than SMALL_SETS (``local`` is then meaningless)."""
    m = 0
    last = -1
    last_id = -1
    for q in range(flat.size):
        s = flat[q]
        if s != last:
            last_id = -1
            for j in range(m):
                if found[j] == s:
                    last_id = j
                    break
            if last_id < 0:
                if m == SMALL_SETS:
                    return -1
                found[m] = s
                last_id = m
                m += 1
            last = s
        local[q] = last_id
    order = np.argsort(found[:m])
    rank = np.empty(m, np.int32)
    for j in range(m):
        rank[order[j]] = j
    for q in range(flat.size):
        local[q] = rank[local[q]]
    found[:m] = found[:m][order]
    return m


@jit
def _group_sets(set_ids: Any) -> tuple[Any, Any, Any]:  # pragma: no cover - compiled
    """Per image: local set id of every pixel and the image's distinct sets.

    Args: set_ids (n, q) int64 (q pixels per image). Returns local (n, q) int32, indptr
    (n + 1,) int64 and sets (e,) int64 ascending within an image."""
    n, q = set_ids.shape
    local = np.empty((n, q), np.int32)
    indptr = np.zeros(n + 1, np.int64)
    sets = np.empty(n * (SMALL_SETS + 1), np.int64)
    found = np.empty(SMALL_SETS + 1, np.int64)
    for i in range(n):
        m = _group_image(set_ids[i], local[i], found)
        if m < 0:
            distinct = np.unique(set_ids[i])
            m = distinct.size
            local[i] = np.searchsorted(distinct, set_ids[i]).astype(np.int32)
            if indptr[i] + m > sets.size:
                sets = np.concatenate((sets, np.empty(m + sets.size, np.int64)))
            sets[indptr[i]:indptr[i] + m] = distinct
        else:
            if indptr[i] + m > sets.size:
                sets = np.concatenate((sets, np.empty(m + sets.size, np.int64)))
            sets[indptr[i]:indptr[i] + m] = found[:m]
        indptr[i + 1] = indptr[i] + m
    return local, indptr, sets[:indptr[n]]


def group_sets(set_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's distinct label sets and every pixel's index among them.

    Args:
        set_ids: (n, sh, sw) integer label-set id per pixel.

    Returns:
        local: (n, sh * sw) int32 index of the pixel's set among its image's sets;
        indptr: (n + 1,) int64 image i's sets are ``sets[indptr[i]:indptr[i + 1]]``;
        sets: (e,) int64, ascending within an image.
    """
    flat = np.ascontiguousarray(set_ids.reshape(len(set_ids), -1), dtype=np.int64)
    if kernel_name() == "numba":
        local, indptr, sets = _group_sets(flat)
        return local, indptr, sets
    groups = [np.unique(row, return_inverse=True) for row in flat]
    local = np.stack([inv.reshape(-1) for _, inv in groups]).astype(np.int32).reshape(flat.shape)
    indptr = np.concatenate([[0], np.cumsum([len(u) for u, _ in groups])]).astype(np.int64)
    sets = np.concatenate([u for u, _ in groups] or [np.zeros(0, np.int64)]).astype(np.int64)
    return local, indptr, sets


@jit
def _column_keys(cols: Any, mix: Any) -> Any:  # pragma: no cover - compiled
    """(n,) uint64 key of every column of ``cols`` (width, n): the values times ``mix``
    (width,) uint64 summed with wrap-around, then ``key ^ key >> 29``."""
    width, n = cols.shape
    keys = np.zeros(n, np.uint64)
    for j in range(width):
        for q in range(n):
            keys[q] += np.uint64(cols[j, q]) * mix[j]
    for q in range(n):
        keys[q] ^= keys[q] >> np.uint64(29)
    return keys


@jit
def _unique_columns(cols: Any, mix: Any) -> tuple[Any, Any, Any, bool
                                                  ]:  # pragma: no cover - compiled
    """(distinct columns (width, u) by ascending key, inverse (n,) int64, counts (u,) int64,
    whether the keys' grouping holds for the columns themselves)."""
    width, n = cols.shape
    keys = _column_keys(cols, mix)
    starts = np.empty(n, np.int64)  # runs of equal keys: a label map's rows come in runs
    n_runs = 0
    for q in range(n):
        if q == 0 or keys[q] != keys[q - 1]:
            starts[n_runs] = q
            n_runs += 1
    distinct = np.unique(keys[starts[:n_runs]])
    inverse = np.empty(n, np.int64)
    counts = np.zeros(distinct.size, np.int64)
    first = np.full(distinct.size, -1, np.int64)
    for run in range(n_runs):
        a = starts[run]
        b = starts[run + 1] if run + 1 < n_runs else n
        g = np.searchsorted(distinct, keys[a])
        inverse[a:b] = g
        counts[g] += b - a
        if first[g] < 0:
            first[g] = a
    uniq = np.empty((width, distinct.size), cols.dtype)
    for g in range(distinct.size):
        uniq[:, g] = cols[:, first[g]]
    for q in range(n):
        for j in range(width):
            if uniq[j, inverse[q]] != cols[j, q]:
                return uniq, inverse, counts, False
    return uniq, inverse, counts, True


def unique_columns(cols: np.ndarray, mix: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`ray_dissect.concepts.index.unique_columns` compiled: the same distinct columns
    (width, u) in the same order, inverse (n,) int64 and counts (u,) int64, from the same
    keys (``mix`` (width,) uint64); None on a key collision (the caller's exact fallback)."""
    uniq, inverse, counts, ok = _unique_columns(np.ascontiguousarray(cols), mix)
    return (uniq, inverse, counts) if ok else None
