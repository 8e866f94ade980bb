"""Stage ``thresholds``: exact per-unit thresholds and activation ranges (CPU tasks, or the
model actors' GPUs when they hold some: ``on_gpus``).

Work unit: one layer (``thresholds/<layer>.npz``), computed by tasks over blocks of units whose
activations fit :data:`THRESHOLD_TASK_BYTES`; the driver saves a layer when its last block is in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.job.layout import JobDir, layer_key, unit_blocks
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, dissecting
from ray_dissect.spec import ClusteredMethod, JobSpec
from ray_dissect.storage import AnyPath, arrays
from ray_dissect.units.ranges import unit_ranges
from ray_dissect.units.thresholds import device_thresholds, unit_thresholds

THRESHOLD_TASK_BYTES = 256 * 2**20


def threshold_work(job: JobDir, layer: str, units: tuple[int, int], quantile: float,
                   valid: np.ndarray, clusters: int = 1, seed: int = 0, device: str = "cpu"
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact thresholds of units [u0, u1) over the valid images, and their activation ranges.

    Returns thresholds (k,) float64, nonfinite (k,) int64 and ranges (k, clusters, 2) float64
    ([lo, hi] per range, NaN where a unit has fewer ranges; (k, 0, 2) when clusters == 1).
    On a model actor's ``device`` other than ``"cpu"`` the values are sorted there
    (:func:`~ray_dissect.units.thresholds.device_thresholds`, identical results); the
    k-means ranges stay on the CPU.
    """
    acts = arrays.open_array(job.activations_zarr, layer_key(layer))[:, units[0]:units[1]][valid]
    thresholds, nonfinite = (unit_thresholds(acts, quantile) if device == "cpu"
                             else device_thresholds(acts, quantile, device))
    ranges = np.full((acts.shape[1], clusters if clusters > 1 else 0, 2), np.nan)
    if clusters > 1:
        for u, unit in enumerate(unit_ranges(acts, clusters, seed)):
            ranges[u, : len(unit)] = unit
    return thresholds, nonfinite, ranges


def block_work(env: WorkEnv, valid: np.ndarray, layer: str, units: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The work unit as the stage table runs it: :func:`threshold_work` with the spec's method."""
    method = env.spec.dissection()
    if isinstance(method, ClusteredMethod):
        return threshold_work(env.job, layer, units, method.quantile, valid, method.clusters,
                              method.seed, env.device)
    return threshold_work(env.job, layer, units, method.quantile, valid, device=env.device)


def threshold_blocks(shape: tuple[int, ...], n_images: int, per_task: int
                     ) -> list[tuple[int, int]]:
    """Unit blocks whose activations over all images fit THRESHOLD_TASK_BYTES (>= 1 unit).

    A threshold task needs every value of its units (exact quantile, k-means), so its memory
    is at most max(THRESHOLD_TASK_BYTES, one unit's N x h x w float32) plus one unit in float64.
    """
    per_unit = n_images * int(np.prod(shape[1:])) * 4
    return unit_blocks(shape[0], max(1, min(per_task, THRESHOLD_TASK_BYTES // per_unit)))


def plan(ctx: JobContext) -> Plan | None:
    """Every block of every layer without a thresholds file; the valid mask is shared. None
    for method ``none``."""
    if not ctx.spec.dissects:
        return None
    valid = ctx.valid_images
    todo = [layer for layer in ctx.spec.layers if not ctx.job.thresholds(layer).exists()]
    per_task = ctx.spec.resources.units_per_task
    calls = [(layer, block) for layer in todo
             for block in threshold_blocks(ctx.stored_shape(layer), len(valid), per_task)]
    ctx.parts["thresholds"] = {layer: {} for layer in todo}
    ctx.parts["threshold_blocks"] = {layer: sum(c[0] == layer for c in calls) for layer in todo}
    n = len(ctx.spec.layers)
    return Plan(n, n - len(todo), calls, shared=(valid,))


def collect(ctx: JobContext, call: tuple[str, tuple[int, int]],
            result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> int:
    """Keep a block's result; save the layer (one work unit) when its last block arrives."""
    layer, block = call
    parts = ctx.parts["thresholds"][layer]
    parts[block] = result
    if len(parts) < ctx.parts["threshold_blocks"][layer]:
        return 0
    ordered = [parts[b] for b in sorted(parts)]
    storage.save_npz(ctx.job.thresholds(layer),
                     thresholds=np.concatenate([p[0] for p in ordered]),
                     nonfinite=np.concatenate([p[1] for p in ordered]),
                     ranges=np.concatenate([p[2] for p in ordered]))
    return 1


def finish(ctx: JobContext) -> int:
    """Load every layer's thresholds, non-finite counts and ranges."""
    for layer in ctx.spec.layers:
        z = storage.load_npz(ctx.job.thresholds(layer))
        ctx.thresholds[layer] = (z["thresholds"], z["nonfinite"], z["ranges"])
    return 0


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The quantile, and a clustered method's clusters and seed (the ranges)."""
    out: dict[str, Any] = {"quantile": data["method"].get("quantile")}
    if isinstance(spec.method, ClusteredMethod):
        out |= {"clusters": spec.method.clusters, "seed": spec.method.seed}
    return out


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``thresholds/``."""
    return (job.stage_dir("thresholds"),)


STAGE = Stage(name="thresholds", runs_on="tasks", work=block_work, plan=plan, collect=collect,
              finish=finish, outputs=outputs, covers=covers, on_gpus=True,
              used=dissecting)
