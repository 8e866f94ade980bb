"""Stage ``concepts``: the label-set concept index, one image shard per work unit (CPU tasks).

Work unit: shard s -> ``concepts.zarr`` set ids (n, sh, sw) uint32 and the shard's set table
``concepts/shard_s.npz``. Driver: merge the shard tables into ``concepts/index.npz``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.index import ShardIndex, build_shard, merge_shards, save_index
from ray_dissect.job.layout import CHUNK_IMAGES, JobDir, shard_range
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, dissecting, resources
from ray_dissect.records.schema import SampleError
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath, arrays


def concept_work(env: WorkEnv, shard: int) -> int:
    """Build the concept index of one shard: write its set ids (Zarr) and set table (npz)."""
    shard_images = env.spec.resources.shard_images
    start, stop = shard_range(shard, shard_images, len(env.concept_dataset))
    part = build_shard(env.concept_dataset, start, stop, env.spec.model.preprocess)
    storage.save_npz(env.job.concept_shard(shard), set_indptr=part.set_indptr,
                     set_labels=part.set_labels, image_indptr=part.image_indptr,
                     image_sets=part.image_sets, image_counts=part.image_counts,
                     valid=part.valid, errors=np.array(json.dumps(part.errors)))
    arrays.write_shard(env.job.concepts_zarr, "set_ids", shard, shard_images, part.set_ids)
    return shard


def load_concept_shard(job: JobDir, shard: int) -> ShardIndex:
    """Read a shard's set table back (its set ids stay in Zarr)."""
    z = storage.load_npz(job.concept_shard(shard))
    errors = tuple((int(i), str(r)) for i, r in json.loads(str(z["errors"])))
    return ShardIndex(np.zeros((0, 0, 0), np.uint32), z["set_indptr"], z["set_labels"],
                      z["image_indptr"], z["image_sets"], z["image_counts"], z["valid"], errors)


def plan(ctx: JobContext) -> Plan | None:
    """Create the set-id array; every shard without both its marker and its table is to do.
    None for method ``none`` (no concepts)."""
    if not ctx.spec.dissects:
        return None
    shard_images, n = ctx.spec.resources.shard_images, len(ctx.dataset)
    n_shards = math.ceil(n / shard_images)
    arrays.create_image_array(ctx.job.concepts_zarr, "set_ids",
                              (n, *ctx.concept_dataset.mask_shape),
                              "uint32", shard_images, math.gcd(shard_images, CHUNK_IMAGES),
                              stage_hash=ctx.stage_hash)
    done = arrays.done_shards(ctx.job.concepts_zarr, "set_ids")
    todo = [s for s in range(n_shards) if not (done[s] and ctx.job.concept_shard(s).exists())]
    return Plan(n_shards, n_shards - len(todo), [(s,) for s in todo])


def collect(ctx: JobContext, call: tuple[int], result: int) -> int:
    """A shard is complete once its task returns (the task wrote everything)."""
    return 1


def finish(ctx: JobContext) -> int:
    """Merge every shard's table into the index; record unreadable samples. Returns their count."""
    shard_images = ctx.spec.resources.shard_images
    n_shards = math.ceil(len(ctx.dataset) / shard_images)
    shards = [load_concept_shard(ctx.job, s) for s in range(n_shards)]
    dataset = ctx.concept_dataset
    ctx.index = merge_shards(dataset.vocab, dataset.mask_shape, shard_images, shards)
    save_index(ctx.index, ctx.job.concept_index)
    errors = [SampleError(index=s * shard_images + i,
                          image=ctx.dataset.samples[s * shard_images + i].image,
                          stage="concepts", reason=reason)
              for s, part in enumerate(shards) for i, reason in part.errors]
    ctx.errors.extend(errors)
    return len(errors)


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The index depends on the dataset and its shards (and the crop, when one is set)."""
    crop = data["model"]["preprocess"]
    later = {"crop": [crop["resize"], crop["size"]]} if "resize" in crop else {}  # set: hashed
    return {"dataset": data["dataset"], "shard_images": resources(data)["shard_images"],
            **later}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``concepts.zarr`` and ``concepts/``."""
    return job.concepts_zarr, job.stage_dir("concepts")


STAGE = Stage(name="concepts", runs_on="tasks", work=concept_work, plan=plan, collect=collect,
              finish=finish, outputs=outputs, covers=covers,
              used=dissecting)
