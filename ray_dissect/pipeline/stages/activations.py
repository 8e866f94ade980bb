"""Stage ``activations``: every layer's outputs, one image shard per work unit (model actors).

Work unit: shard s -> ``activations.zarr`` layers/<layer> (n, units, h, w) float32, written
whole by the one actor that ran it, and ``activations/bad_s.json`` (the unreadable images,
written by the driver once the shard is in). Driver: mark unreadable images invalid, and sum
each shard's time breakdown (decode, forward, copy, write, wait) into the manifest.

:func:`extraction_work` runs the shard through the replica's threaded pipeline
(:mod:`ray_dissect.pipeline.shard_pipeline`, two shards in flight per actor);
:func:`serial_extraction_work` is the plain one-thread loop it must match bit for bit (the
tests' and benchmarks' reference).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.job.layout import CHUNK_IMAGES, JobDir, layer_key, shard_range
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.shard_pipeline import STEPS, ShardResult
from ray_dissect.pipeline.stage import Stage, resources
from ray_dissect.records.schema import SampleError
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath, arrays


def read_batch(env: WorkEnv, start: int, stop: int, bad: list[tuple[int, str]]
                ) -> tuple[list[np.ndarray], list[int]]:
    """Images [start, stop) as (h, w, 3) uint8; an unreadable one becomes black and is noted."""
    size = env.spec.model.preprocess.size
    images, bad_rows = [], []
    for index in range(start, stop):
        try:
            images.append(env.dataset.read_image(index))
        except BadSampleError as err:
            images.append(np.zeros((size, size, 3), dtype=np.uint8))
            bad_rows.append(index - start)
            bad.append((index, str(err)))
    return images, bad_rows


def extraction_work(env: WorkEnv, shard: int) -> ShardResult:
    """Extract one shard of images for every layer and write each layer's Zarr shard whole.

    An unreadable image is replaced by a black one so batches keep their composition (results
    do not depend on which actor ran the shard); its activations are written as zeros and the
    image is reported. Thread-safe: the replica's pipeline overlaps concurrent calls.

    Returns:
        (global image index, reason) for each unreadable image, and the shard's time
        breakdown in seconds (:data:`~ray_dissect.pipeline.shard_pipeline.STEPS`).
    """
    return env.shard_pipeline().run(shard)


def serial_extraction_work(env: WorkEnv, shard: int) -> ShardResult:
    """:func:`extraction_work` in one thread, one step after the other (the reference)."""
    res = env.spec.resources
    start, stop = shard_range(shard, res.shard_images, len(env.dataset))
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in env.spec.layers}
    bad: list[tuple[int, str]] = []
    seconds = dict.fromkeys(STEPS, 0.0)
    for b0 in range(start, stop, res.batch_size):
        t0 = time.perf_counter()
        images, bad_rows = read_batch(env, b0, min(b0 + res.batch_size, stop), bad)
        t1 = time.perf_counter()
        for layer, acts in env.keep_chosen(env.extractor(images)).items():
            acts[bad_rows] = 0.0
            out[layer].append(acts)
        seconds["decode"] += t1 - t0
        seconds["forward"] += time.perf_counter() - t1
    t0 = time.perf_counter()
    for layer, parts in out.items():
        arrays.write_shard(env.job.activations_zarr, layer_key(layer), shard, res.shard_images,
                           np.concatenate(parts))
    seconds["write"] = time.perf_counter() - t0
    return ShardResult(bad, seconds)


def plan(ctx: JobContext) -> Plan:
    """Create one array per layer; a shard is to do unless every layer and its bad list are in."""
    res, n = ctx.spec.resources, len(ctx.dataset)
    n_shards = math.ceil(n / res.shard_images)
    done = np.ones(n_shards, dtype=bool)
    for layer in ctx.spec.layers:
        units, h, w = ctx.stored_shape(layer)
        arrays.create_image_array(ctx.job.activations_zarr, layer_key(layer), (n, units, h, w),
                                  "float32", res.shard_images,
                                  math.gcd(res.shard_images, CHUNK_IMAGES), (64, h, w),
                                  stage_hash=ctx.stage_hash)
        done &= arrays.done_shards(ctx.job.activations_zarr, layer_key(layer))
    todo = [s for s in range(n_shards) if not (done[s] and ctx.job.bad_images(s).exists())]
    return Plan(n_shards, n_shards - len(todo), [(s,) for s in todo])


def collect(ctx: JobContext, call: tuple[int], result: ShardResult) -> int:
    """Write the shard's unreadable images (the shard's last output)."""
    storage.write_text(ctx.job.bad_images(call[0]), json.dumps(result.bad))
    return 1


def timings(result: ShardResult) -> dict[str, float]:
    """The shard's time breakdown (summed per stage into the manifest)."""
    return result.breakdown


def finish(ctx: JobContext) -> int:
    """Record unreadable images and leave them out of the valid images (and the index's)."""
    n_shards = math.ceil(len(ctx.dataset) / ctx.spec.resources.shard_images)
    errors = [SampleError(index=i, image=ctx.dataset.samples[i].image, stage="activations",
                          reason=reason)
              for s in range(n_shards)
              for i, reason in json.loads(storage.read_text(ctx.job.bad_images(s)))]
    ctx.errors.extend(errors)
    valid = ctx.index.valid.copy() if ctx.index is not None else np.ones(len(ctx.dataset), bool)
    valid[[e.index for e in ctx.errors]] = False
    ctx.valid = valid
    if ctx.index is not None:
        ctx.index = replace(ctx.index, valid=valid)
    return len(errors)


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The model, the layers and what changes the numbers of a forward pass."""
    res = resources(data)
    later = {"gpu_decode": res["gpu_decode"]} if "gpu_decode" in res else {}  # set: hashed
    later |= {"units": data["units"]} if "units" in data else {}  # a subset: hashed
    return {"model": data["model"], "layers": data["layers"], "batch": res["batch_size"],
            "threads": res["threads_per_actor"], "gpus": res["gpus_per_actor"], **later}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``activations.zarr`` and ``activations/``."""
    return job.activations_zarr, job.stage_dir("activations")


STAGE = Stage(name="activations", runs_on="actors", work=extraction_work, plan=plan,
              collect=collect, finish=finish, outputs=outputs, covers=covers,
              calls_per_actor=2, timings=timings)
