"""Stage ``ranges_importance`` (study): how many decisions change when one activation range
is zeroed (model actors, an image shard each; only with ``studies.ranges_importance``, for
clustered jobs).

CCE's ``compute_ranges_importance``, fixed: the ranges are the clustered method's k-means
ranges sorted by lower bound (``thresholds/<layer>.npz`` ``ranges``; CCE used k-means label
order), the bounds rule is the method's ``bounds`` (CCE's code: strict), and the forward hook
returns the zeroed tensor so the model's own forward gives the logits on any architecture
(CCE recomputed ``fc(avgpool(.))``, ResNet ``layer4`` only).

Work unit: shard s -> per layer and range index k the number of valid images whose argmax
class changes when every unit's k-th range is zeroed at once and, with ``per_unit``, when one
unit's is. Driver: ``studies/ranges_importance/shard_<s>.npz``, then
``studies/ranges_importance.jsonl`` (:class:`RangesImportanceRow`, a layer row with ``unit``
null per (layer, k), then its unit rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect.datasets.base import ImageDataset
from ray_dissect.explain.ranges import RangeSpec, range_specs
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, required_section, section, uses
from ray_dissect.pipeline.stages.image_studies import (
    layer_key_of,
    model_input,
    needs_logits,
    save_shard,
    shard_plan,
    shard_sums,
    study_error,
    study_outputs,
    valid_batches,
)
from ray_dissect.pipeline.stages.scoring import inclusive_bounds
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.studies import RangesImportanceRow
from ray_dissect.report.studies import STUDIES_PAGE
from ray_dissect.spec import ClusteredMethod, JobSpec, RangesImportanceSpec
from ray_dissect.studies.hooks import decisions, range_zeroer

NAME = "ranges_importance"


def _spec(env: WorkEnv | JobContext) -> RangesImportanceSpec:
    return required_section(env.spec, "studies", "ranges_importance", RangesImportanceSpec)


def kmeans_ranges(ranges: np.ndarray, inclusive: bool) -> list[RangeSpec]:
    """Per range index k, every unit's k-th range (lo = +inf where a unit has none).

    Args:
        ranges: (U, K, 2) float64 [lo, hi] sorted by lo per unit, NaN where missing.
    """
    return range_specs(np.full(len(ranges), np.nan), ranges, inclusive)[1:]


def only_unit(rng: RangeSpec, u: int) -> RangeSpec:
    """``rng`` restricted to unit ``u`` (every other unit untouched)."""
    lo = np.full_like(rng.lo, np.inf)
    hi = np.full_like(rng.hi, -np.inf)
    lo[u], hi[u] = rng.lo[u], rng.hi[u]
    return RangeSpec(lo, hi, rng.inclusive)


def _flips(env: WorkEnv, x: Any, layer: str, rng: RangeSpec, base: np.ndarray) -> int:
    edit = range_zeroer(rng.lo, rng.hi, rng.inclusive)
    _, classes = decisions(env.model, x, layer, edit, env.spec.model.layouts.get(layer))
    return int((classes != base).sum())


def _layer_flips(env: WorkEnv, x: Any, base: np.ndarray, layer: str, specs: list[RangeSpec],
                 out_all: np.ndarray, out_unit: np.ndarray) -> None:
    """Add one batch's flips of one layer to ``out_all`` (K,) and ``out_unit`` (U, K)."""
    for k, rng in enumerate(specs):
        out_all[k] += _flips(env, x, layer, rng, base)
        if _spec(env).per_unit:
            for u in np.flatnonzero(np.isfinite(rng.lo)):
                out_unit[u, k] += _flips(env, x, layer, only_unit(rng, int(u)), base)


def importance_work(env: WorkEnv, valid: np.ndarray, ranges: dict[str, np.ndarray],
                    shard: int) -> dict[str, np.ndarray]:
    """Flip counts of one shard: ``images`` () int64 and, per layer i, ``layer<i>_all`` (K,)
    int64 (every unit's k-th range zeroed) and ``layer<i>_unit`` (U, K) int64 (one unit's)."""
    inclusive = inclusive_bounds(env.spec.method)
    specs = {layer: kmeans_ranges(r, inclusive) for layer, r in ranges.items()}
    out: dict[str, np.ndarray] = {"images": np.zeros((), dtype=np.int64)}
    for i, layer in enumerate(env.spec.layers):
        units, k = ranges[layer].shape[:2]
        out[layer_key_of(i, "all")] = np.zeros(k, dtype=np.int64)
        out[layer_key_of(i, "unit")] = np.zeros((units, k), dtype=np.int64)
    for images in valid_batches(env, valid, shard, len(valid)):
        x = model_input(env, images)
        _, base = decisions(env.model, x)
        out["images"] += len(images)
        for i, layer in enumerate(env.spec.layers):
            _layer_flips(env, x, base, layer, specs[layer], out[layer_key_of(i, "all")],
                         out[layer_key_of(i, "unit")])
    return out


def plan(ctx: JobContext) -> Plan | None:
    """Shards without a done marker; the valid images and every layer's ranges are shared.
    None without the study."""
    if ctx.spec.studies.ranges_importance is None:
        return None
    return shard_plan(ctx, NAME, len(ctx.valid_images),
                      (ctx.valid_images, {layer: _ranges(ctx, layer) for layer in ctx.spec.layers}))


def _ranges(ctx: JobContext, layer: str) -> np.ndarray:
    """(U, K, 2) float64 the layer's ranges by unit of the model's output (NaN, never
    zeroed, for the units the job does not dissect: ``units:``)."""
    return ctx.all_units(layer, ctx.thresholds[layer][2], np.nan)


def collect(ctx: JobContext, call: tuple[int], sums: dict[str, np.ndarray]) -> int:
    """Write a shard's counts, then its done marker."""
    return save_shard(ctx, NAME, call[0], sums)


def _fraction(flips: int, images: int) -> float | None:
    return flips / images if images else None


def _layer_rows(ctx: JobContext, i: int, layer: str, sums: dict[str, np.ndarray]
                ) -> list[RangesImportanceRow]:
    images, ranges = int(sums["images"]), _ranges(ctx, layer)
    all_flips, unit_flips = sums[layer_key_of(i, "all")], sums[layer_key_of(i, "unit")]
    rows = []
    for k in range(ranges.shape[1]):
        has = np.flatnonzero(np.isfinite(ranges[:, k, 0]))
        rows.append(RangesImportanceRow(
            layer=layer, range_index=k, units_zeroed=len(has), images=images,
            flips=int(all_flips[k]), flip_fraction=_fraction(int(all_flips[k]), images)))
        if _spec(ctx).per_unit:
            rows += [RangesImportanceRow(
                layer=layer, range_index=k, unit=int(u), lo=float(ranges[u, k, 0]),
                hi=float(ranges[u, k, 1]), images=images, flips=int(unit_flips[u, k]),
                flip_fraction=_fraction(int(unit_flips[u, k]), images)) for u in has]
    return rows


def finish(ctx: JobContext) -> int:
    """Sum the shards and write the rows (layer order, then range index, layer row first)."""
    sums = shard_sums(ctx, NAME)
    rows = [row for i, layer in enumerate(ctx.spec.layers)
            for row in _layer_rows(ctx, i, layer, sums)]
    write_jsonl(ctx.job.study(NAME), rows)
    return 0


def check_dataset(spec: JobSpec, dataset: ImageDataset) -> None:
    """With the section set, the method is clustered with ``clusters >= 2`` (the ranges whose
    importance is measured)."""
    method = spec.method
    if spec.studies.ranges_importance is None or (
            isinstance(method, ClusteredMethod) and method.clusters >= 2):
        return
    given = f"{method.kind}" + (f" with clusters {method.clusters}"
                                if isinstance(method, ClusteredMethod) else "")
    raise study_error(NAME, f"needs method kind 'clustered' with clusters >= 2 (got {given})",
                      "set method: {kind: clustered} or drop the study")


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``studies.ranges_importance`` section and the method's bounds."""
    return {"ranges_importance": section(spec, "studies", NAME),
            "bounds": getattr(spec.method, "bounds", None)}


STAGE = Stage(name=NAME, runs_on="actors", work=importance_work, plan=plan, collect=collect,
              finish=finish, outputs=study_outputs(NAME), covers=covers, owns=("studies",),
              check_dataset=check_dataset, check=needs_logits(NAME), report=STUDIES_PAGE,
              used=uses("studies", NAME))
