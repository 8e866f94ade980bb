"""Stages ``concept_blackout_iou`` and ``concept_blackout`` (study): inner-detectors'
``verify`` (only with ``studies.concept_blackout``).

``concept_blackout_iou`` (CPU tasks, a unit block each): every unit's IoU with every concept,
exactly as the scoring stage computes them (the quantile mask, the method's denominator);
the records keep only the top-k, so the study recomputes them rather than widen the records.
Written to ``studies/concept_blackout_iou/<layer>/<u0>-<u1>.npz`` (``iou`` (k, n_labels)
float64) with a done marker beside it.

``concept_blackout`` (model actors, an image shard each, the first ``limit`` images): for
each valid image and each concept of its pixel layers, the copy with the concept blacked out
(:mod:`ray_dissect.studies.blackout`); per layer and concept the sums of the units' mean
activations before and after. Driver: ``studies/concept_blackout/shard_<s>.npz``, then
``studies/concept_blackout.jsonl``: per layer and concept (ascending number) a concept row
(Pearson r and p of IoU against Delta over the units with a finite Delta) followed by its
unit rows (Delta, IoU).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.explain.netdissect import tally
from ray_dissect.explain.ranges import range_specs
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, label_inputs, section, uses
from ray_dissect.pipeline.stages.image_studies import (
    layer_key_of,
    needs_concepts,
    save_shard,
    shard_plan,
    study_outputs,
    valid_batches,
)
from ray_dissect.pipeline.stages.scoring import mask_work
from ray_dissect.records.build import concept_of
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.studies import Concept, ConceptBlackoutRow
from ray_dissect.report.studies import STUDIES_PAGE
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath
from ray_dissect.studies.blackout import BlackoutSums, copies, delta, pearson

NAME = "concept_blackout"
IOU = "concept_blackout_iou"


def _iou_part(ctx_or_env: JobContext | WorkEnv, layer: str, units: tuple[int, int]) -> AnyPath:
    return ctx_or_env.job.study_part(IOU, layer, units).with_suffix(".npz")


def iou_work(env: WorkEnv, index: ConceptIndex, layer: str, units: tuple[int, int],
             thresholds: np.ndarray) -> np.ndarray:
    """(k, n_labels) float64 IoU of units [u0, u1) with every concept (the scoring's)."""
    method = env.spec.dissection()
    spec = range_specs(thresholds, np.zeros((len(thresholds), 0, 2)), False)[:1]
    masks = mask_work(env.job, layer, units, spec, index, env.spec.resources.shard_images)
    eps = 1e-10 if method.denominator == "category" else 0.0
    return tally(masks[0], index, method.denominator).iou(eps)


def iou_plan(ctx: JobContext) -> Plan | None:
    """Unit blocks without a done marker; the index is shared. None without the study."""
    if ctx.spec.studies.concept_blackout is None:
        return None
    blocks = ctx.unit_blocks()
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(_iou_part(ctx, layer, b), ctx.stage_hash)]
    calls = [(layer, b, ctx.thresholds[layer][0][b[0]:b[1]]) for layer, b in todo]
    return Plan(len(blocks), len(blocks) - len(todo), calls, shared=(ctx.concept_index,))


def iou_collect(ctx: JobContext, call: tuple[str, tuple[int, int], np.ndarray],
                iou: np.ndarray) -> int:
    """Write a block's IoUs, then its done marker."""
    path = _iou_part(ctx, call[0], call[1])
    storage.makedirs(path.parent)
    storage.save_npz(path, iou=iou)
    mark_done(path, ctx.stage_hash)
    return 1


def iou_finish(ctx: JobContext) -> int:
    """Nothing to load: the blackout stage's finish reads the blocks."""
    return 0


def _copies(env: WorkEnv, valid: np.ndarray, shard: int, n: int
            ) -> Iterator[tuple[int, int, np.ndarray]]:
    """(image, concept or 0 for the original, copy) of every valid image of the shard."""
    size = env.spec.model.preprocess.size
    for batch in valid_batches(env, valid, shard, n):
        for i in batch.tolist():
            pixel, _ = env.concept_dataset.read_labels(i)
            if not pixel.any():
                continue
            for concept, image in copies(env.concept_dataset.read_image(i), pixel, size):
                yield i, concept, image


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def blackout_work(env: WorkEnv, valid: np.ndarray, n_images: int, shard: int
                  ) -> dict[str, np.ndarray]:
    """Sums of one shard, per layer i: ``layer<i>_concepts`` (C,) int64 and ``layer<i>_before``,
    ``_after`` (U, C) float64 and ``_images`` (U, C) int64 (:class:`BlackoutSums`)."""
    layers = env.spec.layers
    sums: dict[str, BlackoutSums] = {}
    originals: dict[tuple[int, str], np.ndarray] = {}
    for chunk in _chunks(_copies(env, valid, shard, n_images), env.spec.resources.batch_size):
        acts = env.extractor([image for _, _, image in chunk])
        for layer in layers:
            means = acts[layer].astype(np.float64).mean(axis=(2, 3))
            layer_sums = sums.setdefault(layer, BlackoutSums(means.shape[1]))
            for (i, concept, _), mean in zip(chunk, means, strict=True):
                if concept == 0:
                    originals[(i, layer)] = mean
                else:
                    layer_sums.add(concept, originals[(i, layer)], mean)
    out = {}
    for li, layer in enumerate(layers):
        for key, value in sums.get(layer, BlackoutSums(0)).arrays().items():
            out[layer_key_of(li, key)] = value
    return out


def _n_images(ctx: JobContext) -> int:
    spec = ctx.spec.studies.concept_blackout
    assert spec is not None
    return min(len(ctx.valid_images), spec.limit or len(ctx.valid_images))


def plan(ctx: JobContext) -> Plan | None:
    """Shards of the first ``limit`` images without a done marker; the valid images and their
    number are shared. None without the study."""
    if ctx.spec.studies.concept_blackout is None:
        return None
    n = _n_images(ctx)
    return shard_plan(ctx, NAME, n, (ctx.valid_images, n))


def collect(ctx: JobContext, call: tuple[int], sums: dict[str, np.ndarray]) -> int:
    """Write a shard's sums, then its done marker."""
    return save_shard(ctx, NAME, call[0], sums)


def _layer_sums(ctx: JobContext, li: int, units: int) -> dict[str, np.ndarray]:
    """Layer ``li``'s sums over every shard (:meth:`BlackoutSums.arrays`)."""
    total = BlackoutSums(units)
    for s in range(ctx.parts[NAME]):
        z = storage.load_npz(ctx.job.study_shard(NAME, s))
        total.merge({k: z[layer_key_of(li, k)]
                     for k in ("concepts", "seen", "before", "after", "images")})
    return total.arrays()


def _ious(ctx: JobContext, layer: str) -> np.ndarray:
    """(U, n_labels) float64 IoUs of a layer, from the IoU stage's blocks."""
    return np.concatenate([storage.load_npz(_iou_part(ctx, layer, b))["iou"]
                           for name, b in ctx.unit_blocks() if name == layer])


def _concept(ctx: JobContext, number: int) -> Concept:
    return concept_of(ctx.concept_index.vocab, number)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _layer_rows(ctx: JobContext, li: int, layer: str) -> list[ConceptBlackoutRow]:
    sums, ids = _layer_sums(ctx, li, ctx.shapes[layer][0]), ctx.unit_ids(layer)
    iou, d = _ious(ctx, layer), delta(sums["before"], sums["after"])[ids]
    images, rows = sums["images"][ids], []
    for j, c in enumerate(sums["concepts"].tolist()):
        concept, r, p = _concept(ctx, c), *pearson(iou[:, c], d[:, j])
        rows.append(ConceptBlackoutRow(
            layer=layer, concept=concept, images=int(sums["seen"][j]),
            units=int(np.isfinite(d[:, j]).sum()), pearson_r=r, pearson_p=p))
        rows += [ConceptBlackoutRow(layer=layer, concept=concept, unit=int(ids[u]),
                                    images=int(images[u, j]), delta=_finite(d[u, j]),
                                    iou=float(iou[u, c])) for u in range(len(d))]
    return rows


def finish(ctx: JobContext) -> int:
    """Merge the shards, join the IoUs and write the rows."""
    rows = [row for li, layer in enumerate(ctx.spec.layers)
            for row in _layer_rows(ctx, li, layer)]
    write_jsonl(ctx.job.study(NAME), rows)
    return 0


def iou_covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """Whether the study runs, and what the labels' IoUs depend on."""
    return {"concept_blackout": spec.studies.concept_blackout is not None,
            "labels": label_inputs(data, "denominator")}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``studies.concept_blackout`` section and what the labels depend on."""
    return {"concept_blackout": section(spec, "studies", NAME),
            "labels": label_inputs(data, "denominator")}


STAGES = (
    Stage(name=IOU, runs_on="tasks", work=iou_work, plan=iou_plan, collect=iou_collect,
          finish=iou_finish, outputs=study_outputs(IOU, rows=False), covers=iou_covers,
          owns=("studies",),
          used=uses("studies", "concept_blackout")),
    Stage(name=NAME, runs_on="actors", work=blackout_work, plan=plan, collect=collect,
          finish=finish, outputs=study_outputs(NAME), covers=covers, owns=("studies",),
          check_dataset=needs_concepts(NAME), report=STUDIES_PAGE,
          used=uses("studies", "concept_blackout")),
)
