"""What the studies on the model actors share: image-shard work units whose results are sums.

A work unit is one image shard (``resources.shard_images`` images, the extraction's shards);
it forwards the shard's valid images in batches of ``resources.batch_size`` and returns named
arrays of sums. The driver writes them to ``studies/<name>/shard_<s>.npz`` with a done marker
beside it, and once every shard is in, sums the shards (so a resumed job redoes only the
shards in flight, and the totals do not depend on which actor ran which shard).

Also the preflight checks and outputs the study stages share (:func:`needs_concepts`,
:func:`needs_logits`, :func:`study_outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.datasets.registry import concept_formats
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir, shard_range
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath


def shard_plan(ctx: JobContext, name: str, n_images: int, shared: tuple[Any, ...]) -> Plan:
    """Shards of the first ``n_images`` images without a done marker (calls ``(shard,)``)."""
    n_shards = math.ceil(n_images / ctx.spec.resources.shard_images)
    ctx.parts[name] = n_shards
    todo = [s for s in range(n_shards)
            if not verified_done(ctx.job.study_shard(name, s), ctx.stage_hash)]
    return Plan(n_shards, n_shards - len(todo), [(s,) for s in todo], shared=shared)


def valid_batches(env: WorkEnv, valid: np.ndarray, shard: int, n_images: int
                  ) -> Iterator[np.ndarray]:
    """Global indices (b,) int64 of the valid images of ``shard``, ``batch_size`` at a time."""
    res = env.spec.resources
    start, stop = shard_range(shard, res.shard_images, n_images)
    images = start + np.flatnonzero(valid[start:stop])
    for b0 in range(0, len(images), res.batch_size):
        yield images[b0:b0 + res.batch_size]


def model_input(env: WorkEnv, images: np.ndarray) -> Any:
    """The preprocessed (b, 3, size, size) float32 tensor of ``images``, on the actor's
    device."""
    import torch

    batch = [env.dataset.read_image(int(i)) for i in images]
    return torch.from_numpy(preprocess(batch, env.spec.model.preprocess)).to(env.device)


def save_shard(ctx: JobContext, name: str, shard: int, sums: dict[str, np.ndarray]) -> int:
    """Write a shard's sums, then its done marker (one work unit)."""
    path = ctx.job.study_shard(name, shard)
    storage.makedirs(path.parent)
    storage.save_npz(path, **sums)
    mark_done(path, ctx.stage_hash)
    return 1


def shard_sums(ctx: JobContext, name: str) -> dict[str, np.ndarray]:
    """Every shard's arrays summed (the arrays of all shards have the same shapes)."""
    total: dict[str, np.ndarray] = {}
    for s in range(ctx.parts[name]):
        for key, value in storage.load_npz(ctx.job.study_shard(name, s)).items():
            total[key] = total[key] + value if key in total else value.copy()
    return total


def layer_key_of(index: int, what: str) -> str:
    """The npz key of array ``what`` of the spec's ``index``-th layer (layer names may hold
    any character, so keys use positions)."""
    return f"layer{index}_{what}"


def study_error(name: str, what: str, hint: str) -> SpecError:
    """A refused ``studies.<name>`` section."""
    return SpecError(f"job spec field 'studies.{name}': {what}", hint=hint)


def needs_concepts(name: str) -> Callable[[JobSpec, ImageDataset], None]:
    """The preflight check of study ``name`` that scores concepts: with its section set, the
    dataset has concept labels and the method scores concepts."""
    def check(spec: JobSpec, dataset: ImageDataset) -> None:
        if getattr(spec.studies, name) is None:
            return
        if not isinstance(dataset, ConceptDataset):
            raise study_error(name, f"needs a concept dataset (got format "
                              f"{spec.dataset.format!r})", f"use a {concept_formats()} dataset, "
                              "or drop the study")
        if not spec.dissects:
            raise study_error(name, "needs a method that scores concepts (got 'none')",
                              "use method netdissect, compositional or clustered")

    return check


def needs_logits(name: str) -> Callable[[JobSpec, ModelInfo], Shapes]:
    """The preflight check of study ``name`` that reads the model's decisions: with its
    section set, the model outputs (batch, classes)."""
    def check(spec: JobSpec, info: ModelInfo) -> Shapes:
        if getattr(spec.studies, name) is not None:
            from ray_dissect.studies.hooks import check_logits

            check_logits(info.model, spec.model.preprocess.size)
        return {}

    return check


def study_outputs(name: str, rows: bool = True) -> Callable[[JobDir], tuple[AnyPath, ...]]:
    """A study stage's outputs: ``studies/<name>/`` and, with ``rows``,
    ``studies/<name>.jsonl``."""
    def outputs(job: JobDir) -> tuple[AnyPath, ...]:
        folder = job.stage_dir(f"studies/{name}")
        return (folder, job.study(name)) if rows else (folder,)

    return outputs
