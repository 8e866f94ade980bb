"""Mergeable top-k images per unit, exact under any sharding (issue 10).

Two selection rules share one accumulator, :class:`TopK`:

- **Rule A (top activations):** per unit, the k images with the largest spatial maximum (or,
  with ``score="mean"``, mean) of the unit's map. Feed ``(n, U, h, w) float32`` maps with
  :meth:`TopK.add_maps`; values are the maxima (means), ``float32``.
- **Rule B (top in-range masks):** per unit and activation range, the k images with the most
  pixels of the unit's thresholded, upsampled mask in that range. The caller counts the pixels;
  feed ``(n, U) int64`` (or ``(n, U, R)`` for R ranges at once) counts to a ``dtype=np.int64``
  accumulator with :meth:`TopK.add`; images with 0 pixels are never selected.

**Order.** Images are ranked by score descending, ties broken to the LOWER global index. This
is a strict total order over (score, index), so the top k of a set does not depend on how the
set was split into shards or in which order partials are merged: the result is exact and
bit-identical to one pass over all images.

**Not selectable:** images marked invalid, NaN and -inf scores (float accumulators), scores
<= 0 (integer accumulators). Rule A takes ``np.max`` over the map, which propagates NaN: a
map with any NaN pixel has a NaN maximum and is not selectable for that unit. When fewer than
k images are selectable the row is padded with index -1 and value NaN (float) or 0 (integer).
-0.0 is ranked (and returned) as +0.0.

**Implementation.** Each (score, index) pair is packed into one ``uint64`` key: the high 32
bits are an order-preserving image of the float32 score (or the integer count), the low 32
bits are ``2**32 - 1 - index``. Key 0 means "empty". Selecting the k largest keys with
``np.partition`` is then exact including ties, and merging is a partition of two key arrays.
Global indices must be in ``[0, 2**32 - 1)`` and integer scores below ``2**32``. The
accumulator records the [lo, hi) index spans it has seen (``spans``, saved in the state) and
refuses an add or merge that would count an image twice, so a stage can also check coverage.
Images are processed in chunks of about 2**21 (unit, image) pairs (16 MiB of keys), so
U=4,096 units by 10,000 images takes 20 chunks of 512 images.

``random_samples`` draws a few seeded random eligible images per unit, to show beside the top
images against cherry-picking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike

from ray_dissect.errors import SpecError

_LOW_BITS = np.uint64(32)
_LOW_MASK = np.uint64(0xFFFFFFFF)
_MAX_INDEX = 0xFFFFFFFF - 1
_SIGN = np.uint32(0x80000000)
_CHUNK_PAIRS = 1 << 21


def _float_keys(scores: np.ndarray) -> np.ndarray:
    """Map float32 scores to order-preserving uint32 keys; NaN and -inf map to 0.

    Args:
        scores: (...) float32.

    Returns:
        (...) uint32; larger key = larger score, 0 = not selectable.
    """
    s = np.where(scores == 0, np.float32(0), scores).astype(np.float32)
    bits = s.view(np.uint32)
    keys = np.where(bits & _SIGN, ~bits, bits | _SIGN)
    return np.where(np.isnan(s) | (s == -np.inf), np.uint32(0), keys)


def _float_values(high: np.ndarray) -> np.ndarray:
    """Invert :func:`_float_keys` (key 0 becomes NaN).

    Args:
        high: (...) uint32 keys.

    Returns:
        (...) float32 scores.
    """
    bits = np.where(high & _SIGN, high ^ _SIGN, ~high).astype(np.uint32)
    return np.where(high == 0, np.float32(np.nan), bits.view(np.float32))


def _int_keys(scores: np.ndarray) -> np.ndarray:
    """Map integer scores (below 2**32) to uint32 keys; scores <= 0 map to 0 (not selectable).

    Args:
        scores: (...) integer array.

    Returns:
        (...) uint32 keys.
    """
    return np.clip(scores, 0, None).astype(np.uint32)


def _pack(high: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Pack uint32 score keys and int64 global indices into uint64 keys (0 where high is 0)."""
    low = _LOW_MASK - index.astype(np.uint64)
    keys = (high.astype(np.uint64) << _LOW_BITS) | low
    return np.where(high == 0, np.uint64(0), keys)


def _top_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The k largest keys of each row, sorted descending.

    Args:
        keys: (U, M) uint64, distinct where non-zero.
        k: how many to keep.

    Returns:
        (U, k) uint64, zero-padded when M < k.
    """
    units, m = keys.shape
    if m < k:
        keys = np.concatenate([keys, np.zeros((units, k - m), np.uint64)], axis=1)
        m = k
    top = np.partition(keys, m - k, axis=1)[:, m - k:] if m > k else keys
    return np.ascontiguousarray(np.sort(top, axis=1)[:, ::-1])


def _join_spans(spans: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Union of disjoint [lo, hi) image spans, refusing any overlap (an image added twice).

    Args:
        spans: (m, 2) int64 sorted, coalesced spans already added.
        new: (j, 2) int64 spans to add.

    Returns:
        (m', 2) int64 sorted, coalesced spans.
    """
    both = np.concatenate([spans, new[new[:, 1] > new[:, 0]]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    if (both[1:, 0] < both[:-1, 1]).any():
        at = int(np.flatnonzero(both[1:, 0] < both[:-1, 1])[0]) + 1
        raise SpecError("images added twice to one top-k accumulator",
                        given=tuple(int(x) for x in both[at]), expected="disjoint shards",
                        hint="add each shard once and merge partials of distinct shards")
    if both.shape[0] < 2:
        return both
    starts = np.concatenate([[True], both[1:, 0] != both[:-1, 1]])
    ends = np.concatenate([both[1:, 0] != both[:-1, 1], [True]])
    return np.stack([both[starts, 0], both[ends, 1]], axis=1)


def _check_k_units(k: int, units: int | tuple[int, ...]) -> tuple[int, ...]:
    """Validate k and the unit shape; return the unit shape as a tuple."""
    shape = (units,) if isinstance(units, int | np.integer) else tuple(int(u) for u in units)
    if int(k) < 1 or any(u < 1 for u in shape):
        raise SpecError("bad top-k size", given=(k, shape), expected="k >= 1 and units >= 1",
                        hint="k is images per unit, units the number of units")
    return shape


class TopK:
    """Exact, mergeable top-k images per unit (ties to the lower global image index).

    Args:
        k: images kept per unit.
        units: number of units U, or a shape such as (U, R) for U units by R ranges.
        dtype: ``np.float32`` (rule A scores; NaN/-inf not selectable) or an integer dtype
            (rule B pixel counts; <= 0 not selectable).
    """

    def __init__(self, k: int, units: int | tuple[int, ...], dtype: DTypeLike = np.float32
                 ) -> None:
        self.k = int(k)
        self.units = _check_k_units(k, units)
        self.dtype = np.dtype(dtype)
        if self.dtype != np.float32 and self.dtype.kind not in "iu":
            raise SpecError("unsupported top-k dtype", given=str(self.dtype),
                            expected="float32 or an integer dtype", hint="use np.float32")
        self._keys = np.zeros((int(np.prod(self.units)), self.k), np.uint64)
        self._spans = np.zeros((0, 2), np.int64)

    @property
    def spans(self) -> np.ndarray:
        """(m, 2) int64 sorted [lo, hi) global index spans added so far (to check coverage)."""
        return self._spans.copy()

    def _score_keys(self, scores: np.ndarray) -> np.ndarray:
        """(m, *units) scores -> (m, prod(units)) uint32 keys."""
        flat = scores.reshape(scores.shape[0], -1)
        if self.dtype == np.float32:
            return _float_keys(flat.astype(np.float32, copy=False))
        return _int_keys(flat)

    def _check(self, start: int, scores: np.ndarray, valid: np.ndarray | None) -> int:
        """Validate one shard's scores and valid mask before any state changes; return n."""
        n = scores.shape[0] if scores.ndim else 0
        if scores.shape[1:] != self.units or start < 0 or start + n - 1 > _MAX_INDEX:
            raise SpecError("bad top-k scores", given=(start, scores.shape),
                            expected=f"(n, {', '.join(map(str, self.units))}) and indices "
                            f"in [0, 2**32 - 1)", hint="pass one shard's (n, U) scores")
        if self.dtype != np.float32 and scores.dtype.kind not in "iub":
            raise SpecError("integer top-k needs integer scores", given=str(scores.dtype),
                            expected="int64 pixel counts", hint="count pixels, not fractions")
        if self.dtype != np.float32 and scores.size and int(scores.max()) > 0xFFFFFFFF:
            raise SpecError("integer top-k score too large", given=int(scores.max()),
                            expected="counts below 2**32", hint="pass pixel counts per image")
        if valid is not None and np.asarray(valid).shape != (n,):
            raise SpecError("bad valid mask", given=np.asarray(valid).shape,
                            expected=f"({n},) bool", hint="one flag per image of the shard")
        return n

    def add(self, start: int, scores: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Offer images ``start .. start+n-1`` to every unit.

        Args:
            start: global index of the first image; shards added to (or merged into) one
                accumulator must not overlap.
            scores: (n, *units) scores, higher is better; float32 or integer per ``dtype``.
            valid: optional (n,) bool; invalid images are never selected.
        """
        scores = np.asarray(scores)
        n = self._check(start, scores, valid)
        self._spans = _join_spans(self._spans, np.array([[start, start + n]], np.int64))
        rows = max(1, _CHUNK_PAIRS // self._keys.shape[0])
        for lo in range(0, n, rows):
            self._add_chunk(start + lo, scores[lo:lo + rows],
                            None if valid is None else np.asarray(valid)[lo:lo + rows])

    def _add_chunk(self, start: int, scores: np.ndarray, valid: np.ndarray | None) -> None:
        """Merge one chunk of (m, *units) scores into the kept keys."""
        high = self._score_keys(scores)
        if valid is not None:
            high = np.where(valid.astype(bool)[:, None], high, np.uint32(0))
        index = np.arange(start, start + scores.shape[0], dtype=np.int64)
        packed = _pack(high, index[:, None]).T
        self._keys = _top_keys(np.concatenate([self._keys, packed], axis=1), self.k)

    def add_maps(self, start: int, activations: np.ndarray, valid: np.ndarray | None = None,
                 score: Literal["max", "mean"] = "max") -> None:
        """Rule A: offer images by the spatial maximum (or mean) of each unit's map.

        Args:
            start: global index of the first image.
            activations: (n, *units, h, w) float32 maps; NaN anywhere in a map makes that
                (image, unit) not selectable.
            valid: optional (n,) bool; invalid images are never selected.
            score: ``max`` (NetDissect) or ``mean`` (silver-system: the map's mean, summed
                in float64 and rounded to float32).
        """
        acts = np.asarray(activations, dtype=np.float32)
        if acts.ndim != len(self.units) + 3:
            raise SpecError("bad activation maps", given=acts.shape,
                            expected=f"(n, {', '.join(map(str, self.units))}, h, w)",
                            hint="pass one shard's layer output")
        flat = acts.reshape(*acts.shape[:-2], -1)
        scores = (flat.max(axis=-1) if score == "max"
                  else flat.mean(axis=-1, dtype=np.float64).astype(np.float32))
        self.add(start, scores, valid)

    def merge(self, other: TopK) -> TopK:
        """Fold another accumulator (of disjoint images) into this one; returns self."""
        if (other.k, other.units, other.dtype) != (self.k, self.units, self.dtype):
            raise SpecError("incompatible top-k partials",
                            given=(other.k, other.units, str(other.dtype)),
                            expected=str((self.k, self.units, str(self.dtype))),
                            hint="merge partials of the same layer, k and rule")
        self._spans = _join_spans(self._spans, other._spans)
        self._keys = _top_keys(np.concatenate([self._keys, other._keys], axis=1), self.k)
        return self

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The selection so far.

        Returns:
            indices: (*units, k) int64 global image indices, -1 where padded.
            values: (*units, k) float32 (NaN where padded) or int64 (0 where padded),
                sorted descending per unit.
        """
        high = (self._keys >> _LOW_BITS).astype(np.uint32)
        low = (self._keys & _LOW_MASK).astype(np.int64)
        indices = np.where(self._keys == 0, -1, 0xFFFFFFFF - low)
        if self.dtype == np.float32:
            values: np.ndarray = _float_values(high)
        else:
            values = high.astype(np.int64)
        shape = (*self.units, self.k)
        return indices.reshape(shape), values.reshape(shape)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain numpy state: ``indices`` (*units, k) int64, ``values`` as in result(), and
        ``spans`` (m, 2) int64, the [lo, hi) image spans added."""
        indices, values = self.result()
        return {"indices": indices, "values": values, "spans": self.spans}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TopK:
        """Rebuild an accumulator from :meth:`state_dict` output (k, units, dtype inferred)."""
        indices = np.asarray(state["indices"], dtype=np.int64)
        values = np.asarray(state["values"])
        if indices.shape != values.shape or indices.ndim < 2:
            raise SpecError("bad top-k state", given=(indices.shape, values.shape),
                            expected="indices and values of equal shape (*units, k)",
                            hint="pass TopK.state_dict() output")
        dtype = np.float32 if values.dtype.kind == "f" else np.int64
        acc = cls(indices.shape[-1], tuple(indices.shape[:-1]), dtype)
        flat_i = indices.reshape(-1, acc.k)
        high = acc._score_keys(values.reshape(-1, acc.k).astype(dtype))
        high = np.where(flat_i < 0, np.uint32(0), high)
        acc._keys = _top_keys(_pack(high, np.clip(flat_i, 0, None)), acc.k)
        spans = np.asarray(state["spans"], dtype=np.int64).reshape(-1, 2)
        acc._spans = _join_spans(acc._spans, spans)
        return acc


def _eligible_lists(eligible: np.ndarray | Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Per-unit sorted unique eligible image indices from a (N, U) mask or per-unit lists."""
    if isinstance(eligible, np.ndarray) and eligible.dtype == bool:
        if eligible.ndim != 2:
            raise SpecError("bad eligibility mask", given=eligible.shape,
                            expected="(N, U) bool", hint="one column per unit")
        return [np.flatnonzero(col) for col in eligible.T]
    lists = [np.unique(np.asarray(e, dtype=np.int64)) for e in eligible]
    if any(e.size and e[0] < 0 for e in lists):
        raise SpecError("negative image index in eligible lists", expected="indices >= 0",
                        hint="pass global image indices")
    return lists


def random_samples(eligible: np.ndarray | Sequence[Sequence[int]], k: int, seed: int,
                   units: Sequence[int] | None = None, stream: Sequence[int] = ()
                   ) -> np.ndarray:
    """A few seeded random eligible (e.g. in-range) images per unit, against cherry-picking.

    Unit u draws without replacement from its sorted eligible indices with
    ``np.random.default_rng([seed, *stream, units[u]])`` (``units`` defaults to 0, 1, ...; pass
    global unit numbers when units come in blocks, and e.g. the range index as ``stream``), so
    the draw depends only on (seed, stream, unit, the eligible set): not on sharding, on the
    other units, or on the order indices were listed in. The
    seed is part of the output: store it beside the indices, which are reproducible only
    given (seed, eligible set).

    Args:
        eligible: (N, U) bool mask (image n eligible for unit u), or a per-unit sequence of
            eligible global image indices.
        k: images per unit.
        seed: a non-negative integer.

    Returns:
        (U, k) int64 image indices, ascending per unit, padded with -1 when a unit has fewer
        than k eligible images.
    """
    if int(k) < 1 or int(seed) < 0:
        raise SpecError("bad random sample request", given=(k, seed),
                        expected="k >= 1 and seed >= 0", hint="e.g. k=5, seed=0")
    lists = _eligible_lists(eligible)
    ids = list(range(len(lists))) if units is None else [int(u) for u in units]
    out = np.full((len(lists), int(k)), -1, dtype=np.int64)
    for unit, pool in enumerate(lists):
        rng = np.random.default_rng([int(seed), *map(int, stream), ids[unit]])
        take = rng.choice(pool, size=min(int(k), pool.size), replace=False)
        out[unit, : take.size] = np.sort(take)
    return out
