"""Stage ``top_images``: the images each record names (CPU tasks, a block of units each).

Work unit: block [u0, u1) of a layer, one pass over its activations -> per unit the ``k``
images with the largest spatial maximum of its map; per explained range the ``k`` images with
the most pixels of the range's mask (:func:`ray_dissect.concepts.masks.mask_pixels`, the mask
the scoring stage scored) and ``samples`` seeded random images among those with any. Ties go
to the lower image index (:class:`ray_dissect.units.topk.TopK`). Driver:
``top_images/<layer>/<u0>-<u1>.npz`` and its done marker, then the records gain them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.masks import mask_pixels
from ray_dissect.explain.ranges import RangeSpec, range_specs, searched_ranges
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage
from ray_dissect.pipeline.stages.scoring import inclusive_bounds
from ray_dissect.records.schema import (
    SCHEMA_VERSION,
    Explanation,
    ImageRef,
    RangeImage,
    Samples,
    TopImage,
    UnitRecord,
)
from ray_dissect.spec import CompositionalMethod, JobSpec
from ray_dissect.spec.base import hashed_data
from ray_dissect.storage import AnyPath, arrays
from ray_dissect.units.topk import TopK, random_samples


@dataclass(frozen=True)
class TopImagesBlock:
    """Top images of a block of U units with E explained ranges each (index -1 = none).

    Attributes:
        unit_index: (U, k) int64, unit_value: (U, k) float32 (largest map maxima, or means
            with ``top_images.score: mean``).
        nonfinite: (U,) int64 NaN/inf activations of each unit over the valid images.
        ranges: (E,) int64 indices of the explained ranges among the block's range specs.
        range_index: (U, E, k) int64, range_pixels: (U, E, k) int64 (most mask pixels).
        samples: (U, E, s) int64 random images with any mask pixel, ascending.
    """

    unit_index: np.ndarray
    unit_value: np.ndarray
    nonfinite: np.ndarray
    ranges: np.ndarray
    range_index: np.ndarray
    range_pixels: np.ndarray
    samples: np.ndarray


def _specs(spec: JobSpec, thresholds: np.ndarray, ranges: np.ndarray
           ) -> tuple[list[RangeSpec], list[int]]:
    """The block's range specs and which of them have explanations (none for netdissect)."""
    specs = range_specs(thresholds, ranges, inclusive_bounds(spec.method))
    if not isinstance(spec.method, CompositionalMethod):  # netdissect, none: no explanations
        return specs, []
    return specs, list(range(1, len(specs))) if len(specs) > 1 else [0]


def _samples(eligible: np.ndarray, spec: JobSpec, ids: np.ndarray, explained: list[int]
             ) -> np.ndarray:
    """Seeded samples of the block's units (``ids`` (k,) int64, their indices in the layer:
    the draw follows the unit, not its position among the chosen units)."""
    n_samples, seed = spec.top_images.samples, spec.top_images.seed
    out = np.full((len(ids), len(explained), n_samples), -1, dtype=np.int64)
    for e, r in enumerate(explained if n_samples else []):
        out[:, e] = random_samples(eligible[:, :, e], n_samples, seed,
                                   units=ids.tolist(), stream=(r,))
    return out


def block_work(env: WorkEnv, valid: np.ndarray, mask_shape: tuple[int, int], layer: str,
               units: tuple[int, int], thresholds: np.ndarray, ranges: np.ndarray,
               ids: np.ndarray) -> TopImagesBlock:
    """Top images of units [u0, u1) of ``layer`` over the valid images, in one pass.

    Args:
        valid: (N,) bool images that count; mask_shape: (sh, sw) of the scored masks;
        thresholds: (U,) float64 and ranges: (U, clusters, 2) float64 of the block's units;
        ids: (U,) int64 their indices in the layer (``units:``).
    """
    spec, k = env.spec, env.spec.top_images.k
    specs, explained = _specs(spec, thresholds, ranges)
    acts = arrays.open_array(env.job.activations_zarr, layer_key(layer))
    n, size = acts.shape[0], units[1] - units[0]
    by_max = TopK(k, size)
    by_pixels = TopK(k, (size, len(explained)), dtype=np.int64) if explained else None
    eligible = np.zeros((n, size, len(explained)), dtype=bool)
    nonfinite = np.zeros(size, dtype=np.int64)
    for start in range(0, n, spec.resources.shard_images):
        stop = min(start + spec.resources.shard_images, n)
        block, ok = acts[start:stop, units[0]:units[1]], valid[start:stop]
        by_max.add_maps(start, block, ok, spec.top_images.score)
        nonfinite += (~np.isfinite(block[ok])).sum(axis=(0, 2, 3))
        if by_pixels is not None:
            counts = np.stack([mask_pixels(block, specs[r].lo, specs[r].hi, mask_shape, ok,
                                           specs[r].inclusive) for r in explained], axis=-1)
            by_pixels.add(start, counts)
            eligible[start:stop] = counts > 0
    unit_index, unit_value = by_max.result()
    empty = np.full((size, 0, k), -1, dtype=np.int64)
    range_index, range_pixels = by_pixels.result() if by_pixels is not None else (empty, empty)
    return TopImagesBlock(unit_index, unit_value, nonfinite, np.asarray(explained, dtype=np.int64),
                          range_index, range_pixels, _samples(eligible, spec, ids, explained))


def _thresholds(ctx: JobContext, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A layer's thresholds, non-finite counts and ranges; NaN (none) for method ``none``."""
    if layer in ctx.thresholds:
        return ctx.thresholds[layer]
    units = ctx.stored_shape(layer)[0]
    return np.full(units, np.nan), np.zeros(units, np.int64), np.full((units, 0, 2), np.nan)


def plan(ctx: JobContext) -> Plan:
    """Every block without a done marker; the valid images and mask shape are shared."""
    blocks = ctx.unit_blocks()
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(ctx.job.top_images_part(layer, b), ctx.stage_hash)]
    bounds = {layer: _thresholds(ctx, layer) for layer in ctx.spec.layers}
    calls = [(layer, b, bounds[layer][0][b[0]:b[1]], bounds[layer][2][b[0]:b[1]],
              ctx.unit_ids(layer)[b[0]:b[1]]) for layer, b in todo]
    shape = ctx.concept_dataset.mask_shape if ctx.spec.dissects else (1, 1)
    return Plan(len(blocks), len(blocks) - len(todo), calls,
                shared=(ctx.valid_images, shape))


def collect(ctx: JobContext, call: tuple[str, tuple[int, int], np.ndarray, np.ndarray,
                                        np.ndarray], block: TopImagesBlock) -> int:
    """Write a block's top images, then its done marker."""
    path = ctx.job.top_images_part(call[0], call[1])
    storage.makedirs(path.parent)
    storage.save_npz(path, **vars(block))
    mark_done(path, ctx.stage_hash)
    return 1


def _refs(ctx: JobContext, indices: np.ndarray) -> list[ImageRef]:
    return [ImageRef(index=int(i), image=ctx.dataset.samples[i].image) for i in indices if i >= 0]


def _explanation(ctx: JobContext, exp: Explanation, e: int, z: dict[str, np.ndarray],
                 u: int) -> Explanation:
    tops = [RangeImage(index=int(i), image=ctx.dataset.samples[i].image, pixels=int(p))
            for i, p in zip(z["range_index"][u, e], z["range_pixels"][u, e], strict=True)
            if i >= 0]
    samples = Samples(seed=ctx.spec.top_images.seed, images=_refs(ctx, z["samples"][u, e]))
    return exp.model_copy(update={"top_images": tops, "samples": samples})


def _with_top_images(ctx: JobContext, rec: UnitRecord, z: dict[str, np.ndarray], b0: int,
                     p: int) -> UnitRecord:
    """``rec`` (at position ``p`` of its layer's chosen units) with its top images."""
    u, (t, _nonfinite, ranges) = p - b0, _thresholds(ctx, rec.layer)
    specs, explained = _specs(ctx.spec, t[p:p + 1], ranges[p:p + 1])
    position = {int(r): e for e, r in enumerate(z["ranges"])}
    searched = searched_ranges(specs, 0) if explained else []
    explanations = [_explanation(ctx, exp, position[r], z, u)
                    for exp, r in zip(rec.explanations, searched, strict=True)]
    tops = [TopImage(index=int(i), image=ctx.dataset.samples[i].image, value=float(v))
            for i, v in zip(z["unit_index"][u], z["unit_value"][u], strict=True) if i >= 0]
    return rec.model_copy(update={"top_images": tops, "explanations": explanations,
                                  "schema_version": SCHEMA_VERSION})


def _bare_records(ctx: JobContext, layer: str, b0: int, z: dict[str, np.ndarray]
                  ) -> list[UnitRecord]:
    """Records of a job that scores no concepts (method ``none``): no labels or threshold."""
    ids = ctx.unit_ids(layer)
    return [UnitRecord(layer=layer, unit=int(ids[b0 + u]), threshold=None, label=None,
                       interpretable=False, per_category={}, top=[], mask_pixels=0,
                       nonfinite=int(n),
                       provenance=ctx.provenance) for u, n in enumerate(z["nonfinite"])]


def finish(ctx: JobContext) -> int:
    """Give every record its top images (and bring records read back to this schema); a job
    without dissection gets its records here."""
    for layer, (b0, b1) in ctx.unit_blocks():
        z = storage.load_npz(ctx.job.top_images_part(layer, (b0, b1)))
        if not ctx.spec.dissects:
            ctx.records.setdefault(layer, []).extend(_bare_records(ctx, layer, b0, z))
        records = ctx.records[layer]
        records[b0:b1] = [_with_top_images(ctx, r, z, b0, b0 + k)
                          for k, r in enumerate(records[b0:b1])]
    return 0


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``top_images`` section, the method's kind and bounds (which mask is counted)."""
    method = spec.method
    return {"top_images": hashed_data(spec.top_images), "kind": method.kind,
            "bounds": getattr(method, "bounds", None)}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``top_images/``."""
    return (job.stage_dir("top_images"),)


STAGE = Stage(name="top_images", runs_on="tasks", work=block_work, plan=plan, collect=collect,
              finish=finish, outputs=outputs, covers=covers, owns=("top_images",))
