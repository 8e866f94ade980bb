"""The driver: runs every stage of a job on Ray and writes validated records.

concepts (CPU tasks over image shards) -> activations (model actors over image shards) ->
thresholds (CPU tasks over unit blocks) -> scoring (CPU tasks over unit blocks) -> records.
Work already marked done in the job directory (same spec) is not redone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import numpy as np

from ray_dissect import __version__, storage, store
from ray_dissect.concepts import ConceptIndex, merge_shards, save_index
from ray_dissect.dataset import BrodenDataset, open_dataset
from ray_dissect.errors import SpecError, StoreError
from ray_dissect.manifest import (
    STAGES,
    Manifest,
    new_manifest,
    read_manifest,
    stale_stages,
    start_run,
    write_manifest,
)
from ray_dissect.models import build_model, check_layers, layer_shapes
from ray_dissect.records import (
    JobSummary,
    Provenance,
    SampleError,
    UnitRecord,
    read_unit_records,
    summarize_layer,
    unit_record,
    write_jsonl,
)
from ray_dissect.runtime.actors import run_extraction, run_on_actors
from ray_dissect.runtime.cluster import gpus_per_actor, ray_session
from ray_dissect.runtime.tasks import concept_task, run_tasks, scoring_task, threshold_task
from ray_dissect.scoring import label_units
from ray_dissect.search import SearchSpace
from ray_dissect.spec import ClusteredMethod, JobSpec, NetDissectMethod
from ray_dissect.storage import AnyPath
from ray_dissect.workunits import (
    CHUNK_IMAGES,
    BlockResult,
    JobDir,
    layer_key,
    load_concept_shard,
    masking_part,
)

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives stage progress (the CLI shows it; tests pass nothing)."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, n: int = 1) -> None: ...


class _Quiet:
    def start(self, stage: str, total: int) -> None:
        log.info("stage %s: %d work units", stage, total)

    def advance(self, stage: str, n: int = 1) -> None:
        pass


class Tracker:
    """Forwards progress to the display and keeps the manifest up to date on disk.

    ``start(stage, total, done)`` opens a stage with ``done`` units already finished by
    earlier runs; ``unit_done`` counts a unit computed by this run.
    """

    def __init__(self, root: AnyPath, manifest: Manifest, progress: Progress) -> None:
        self.root, self.manifest, self.progress = root, manifest, progress
        self._t0: dict[str, float] = {}

    def start(self, stage: str, total: int, done: int) -> None:
        state = self.manifest.stages[stage]
        state.total, state.done, state.state = total, done, "running"
        self._t0[stage] = time.perf_counter() - state.seconds
        self.progress.start(stage, total)
        self.progress.advance(stage, done)
        write_manifest(self.root, self.manifest)

    def unit_done(self, stage: str, n: int = 1) -> None:
        state = self.manifest.stages[stage]
        state.done += n
        state.computed += n
        state.seconds = time.perf_counter() - self._t0[stage]
        self.progress.advance(stage, n)
        write_manifest(self.root, self.manifest)

    def skip(self, stage: str) -> None:
        """A stage this job's method does not use: done, with nothing to show."""
        self.manifest.stages[stage].state = "done"
        write_manifest(self.root, self.manifest)

    def finish(self, stage: str, errors: int = 0) -> float:
        state = self.manifest.stages[stage]
        state.state, state.errors = "done", errors
        state.seconds = time.perf_counter() - self._t0[stage]
        write_manifest(self.root, self.manifest)
        return state.seconds


def prepare_job_dir(spec: JobSpec, root: AnyPath, force: bool = False
                    ) -> tuple[JobDir, Manifest]:
    """Create the job directory, or check that an existing one holds the same job.

    With ``force``, a directory holding another spec is reused: the outputs of the stages
    whose inputs changed (and of every later stage) are removed, earlier ones are kept.
    """
    job = JobDir(root)
    try:
        old = read_manifest(root)
        if old is not None and old.spec_hash != spec.spec_hash():
            stale = stale_stages(old, spec)
            if not force:
                kept = [s for s in STAGES if s not in stale]
                raise SpecError(
                    f"output directory {str(root)!r} holds a different job (spec "
                    f"{old.spec_hash}, this one {spec.spec_hash()}); changed stages: "
                    f"{', '.join(stale)}", hint="choose a new --out, or pass --force to redo "
                    f"the changed stages there (reusing: {', '.join(kept) or 'nothing'})")
            for stage in stale:
                for path in job.outputs(stage):
                    storage.remove_tree(path)
            old = None
        job.make()
        manifest = old or new_manifest(spec, __version__)
        storage.write_text(root / "spec.json", spec.model_dump_json(indent=2) + "\n")
        write_manifest(root, manifest)
    except OSError as err:
        reason = err.strerror or str(err)
        raise StoreError(f"cannot write the output directory {str(root)!r}: {reason}",
                         hint="choose a writable --out (an existing bucket for URIs)") from None
    return job, manifest


def _stage_concepts(spec: JobSpec, job: JobDir, dataset: BrodenDataset,
                    progress: Tracker) -> tuple[ConceptIndex, list[SampleError]]:
    res = spec.resources
    n = len(dataset)
    n_shards = math.ceil(n / res.shard_images)
    store.create_image_array(job.concepts_zarr, "set_ids", (n, *dataset.mask_shape), "uint32",
                             res.shard_images, math.gcd(res.shard_images, CHUNK_IMAGES))
    done = store.done_shards(job.concepts_zarr, "set_ids")
    todo = [s for s in range(n_shards) if not (done[s] and job.concept_shard(s).exists())]
    progress.start("concepts", n_shards, n_shards - len(todo))
    calls = [(spec.dataset.model_dump_json(), str(job.root), s, res.shard_images) for s in todo]
    run_tasks(concept_task, calls, res.cpus_per_task, "concept shard",
              lambda _i, _r: progress.unit_done("concepts"))
    shards = [load_concept_shard(job, s) for s in range(n_shards)]
    index = merge_shards(dataset.vocab, dataset.mask_shape, res.shard_images, shards)
    save_index(index, job.concept_index)
    errors = [SampleError(index=s * res.shard_images + i,
                          image=dataset.samples[s * res.shard_images + i].image,
                          stage="concepts", reason=reason)
              for s, part in enumerate(shards) for i, reason in part.errors]
    progress.finish("concepts", len(errors))
    return index, errors


def _stage_activations(spec: JobSpec, job: JobDir, dataset: BrodenDataset,
                       shapes: dict[str, tuple[int, ...]], progress: Tracker
                       ) -> list[SampleError]:
    res = spec.resources
    n = len(dataset)
    n_shards = math.ceil(n / res.shard_images)
    done = np.ones(n_shards, dtype=bool)
    for layer in spec.layers:
        units, h, w = shapes[layer]
        store.create_image_array(job.activations_zarr, layer_key(layer), (n, units, h, w),
                                 "float32", res.shard_images,
                                 math.gcd(res.shard_images, CHUNK_IMAGES), (64, h, w))
        done &= store.done_shards(job.activations_zarr, layer_key(layer))
    todo = [s for s in range(n_shards) if not (done[s] and job.bad_images(s).exists())]
    progress.start("activations", n_shards, n_shards - len(todo))

    def on_done(shard: int, bad: list[tuple[int, str]]) -> None:
        storage.write_text(job.bad_images(shard), json.dumps(bad))
        progress.unit_done("activations")

    if todo:
        run_extraction(spec, job, todo, gpus_per_actor(res.gpus_per_actor), on_done)
    errors = [SampleError(index=i, image=dataset.samples[i].image, stage="activations",
                          reason=reason)
              for s in range(n_shards)
              for i, reason in json.loads(storage.read_text(job.bad_images(s)))]
    progress.finish("activations", len(errors))
    return errors


THRESHOLD_TASK_BYTES = 256 * 2**20


def _unit_blocks(units: int, per_task: int) -> list[tuple[int, int]]:
    return [(u, min(u + per_task, units)) for u in range(0, units, per_task)]


def _threshold_blocks(shape: tuple[int, ...], n_images: int, per_task: int
                      ) -> list[tuple[int, int]]:
    """Unit blocks whose activations over all images fit THRESHOLD_TASK_BYTES (>= 1 unit).

    A threshold task needs every value of its units (exact quantile, k-means), so its memory
    is at most max(THRESHOLD_TASK_BYTES, one unit's N x h x w float32) plus one unit in float64.
    """
    per_unit = n_images * int(np.prod(shape[1:])) * 4
    return _unit_blocks(shape[0], max(1, min(per_task, THRESHOLD_TASK_BYTES // per_unit)))


def _stage_thresholds(spec: JobSpec, job: JobDir, shapes: dict[str, tuple[int, ...]],
                      valid: np.ndarray, progress: Tracker) -> dict[str, tuple[np.ndarray, ...]]:
    res, out = spec.resources, {}
    todo = [layer for layer in spec.layers if not job.thresholds(layer).exists()]
    method = spec.method
    clusters = method.clusters if isinstance(method, ClusteredMethod) else 1
    seed = method.seed if isinstance(method, ClusteredMethod) else 0
    calls = [(str(job.root), layer, block, method.quantile, valid, clusters, seed)
             for layer in todo
             for block in _threshold_blocks(shapes[layer], len(valid), res.units_per_task)]
    progress.start("thresholds", len(spec.layers), len(spec.layers) - len(todo))
    parts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def on_done(i: int, result: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        parts[i] = result

    run_tasks(threshold_task, calls, res.cpus_per_task, "threshold block", on_done)
    for layer in todo:
        idx = [i for i, c in enumerate(calls) if c[1] == layer]
        storage.save_npz(job.thresholds(layer),
                         thresholds=np.concatenate([parts[i][0] for i in idx]),
                         nonfinite=np.concatenate([parts[i][1] for i in idx]),
                         ranges=np.concatenate([parts[i][2] for i in idx]))
        progress.unit_done("thresholds")
    progress.finish("thresholds")
    for layer in spec.layers:
        z = storage.load_npz(job.thresholds(layer))
        out[layer] = (z["thresholds"], z["nonfinite"], z["ranges"])
    return out


def _stage_scoring(spec: JobSpec, job: JobDir, shapes: dict[str, tuple[int, ...]],
                   thresholds: dict[str, tuple[np.ndarray, ...]], index: ConceptIndex,
                   space: SearchSpace | None, provenance: Provenance, progress: Tracker
                   ) -> dict[str, list[UnitRecord]]:
    import ray

    res, method = spec.resources, spec.method
    blocks = [(layer, b) for layer in spec.layers
              for b in _unit_blocks(shapes[layer][0], res.units_per_task)]
    todo = [(layer, b) for layer, b in blocks
            if not job.record_part(layer, b).with_suffix(".done").exists()]
    progress.start("scoring", len(blocks), len(blocks) - len(todo))
    index_ref, space_ref = ray.put(index), ray.put(space)
    calls = [(str(job.root), layer, b, thresholds[layer][0][b[0]:b[1]],
              thresholds[layer][2][b[0]:b[1]], index_ref, space_ref, method, res.shard_images)
             for layer, b in todo]
    eps = 1e-10 if method.denominator == "category" else 0.0

    def on_done(i: int, block: BlockResult) -> None:
        layer, (b0, b1) = todo[i]
        t, nonfinite, _ranges = thresholds[layer]
        labels = label_units(block.tally.iou(eps), index, method.top_k)
        records = [
            unit_record(layer, b0 + k, lab, float(t[b0 + k]), int(nonfinite[b0 + k]),
                        float(block.tally.area[k]), method.iou_threshold,
                        block.explanations[k] if block.explanations else None, index.vocab,
                        provenance)
            for k, lab in enumerate(labels)]
        part = job.record_part(layer, (b0, b1))
        storage.makedirs(part.parent)
        write_jsonl(part, records)
        storage.touch(part.with_suffix(".done"))
        progress.unit_done("scoring")

    run_tasks(scoring_task, calls, res.cpus_per_task, "scoring block", on_done)
    by_layer = {layer: [r for lay, b in blocks if lay == layer
                        for r in read_unit_records(job.record_part(layer, b))]
                for layer in spec.layers}
    progress.finish("scoring")
    return by_layer


def _stage_masking(spec: JobSpec, job: JobDir, shapes: dict[str, tuple[int, ...]],
                   index: ConceptIndex, space: SearchSpace | None,
                   by_layer: dict[str, list[UnitRecord]],
                   progress: Tracker) -> dict[str, list[UnitRecord]]:
    """Concept-masking scores on the model actors, merged into the records' metrics."""
    import ray

    method, res = spec.method, spec.resources
    if space is None or not getattr(method, "concept_masking", False):
        progress.skip("masking")
        return by_layer
    blocks = [(layer, b) for layer in spec.layers
              for b in _unit_blocks(shapes[layer][0], res.units_per_task)]
    todo = [(layer, b) for layer, b in blocks
            if not masking_part(job, layer, b).with_suffix(".done").exists()]
    progress.start("masking", len(blocks), len(blocks) - len(todo))
    if todo:
        index_ref, space_ref = ray.put(index), ray.put(space)

        def on_done(i: int, scores: dict[str, float | None]) -> None:
            path = masking_part(job, *todo[i])
            storage.write_text(path, json.dumps(scores))
            storage.touch(path.with_suffix(".done"))
            progress.unit_done("masking")

        run_on_actors(spec, job, gpus_per_actor(res.gpus_per_actor), "mask",
                      [(layer, b, index_ref, space_ref) for layer, b in todo], on_done)
    progress.finish("masking")
    scores: dict[tuple[str, str], float | None] = {}
    for layer, b in blocks:
        for key, value in json.loads(storage.read_text(masking_part(job, layer, b))).items():
            scores[(layer, key)] = value
    return {layer: [_with_masking(r, scores) for r in records]
            for layer, records in by_layer.items()}


def _with_masking(rec: UnitRecord, scores: dict[tuple[str, str], float | None]) -> UnitRecord:
    explanations = [
        e.model_copy(update={"metrics": e.metrics.model_copy(update={
            "concept_masking": scores.get((rec.layer, f"{rec.unit}:{e.range_index}"))})})
        if e.metrics is not None else e for e in rec.explanations]
    return rec.model_copy(update={"explanations": explanations})


def preflight(spec: JobSpec) -> tuple[BrodenDataset, dict[str, tuple[int, ...]]]:
    """Check everything checkable before any work: dataset, model, layers and their shapes."""
    dataset = open_dataset(spec.dataset)
    model = build_model(spec.model)
    check_layers(model, spec.layers)
    shapes = dict(layer_shapes(model, spec.model.preprocess.size, spec.layers))
    for layer in spec.layers:
        if layer not in shapes or len(shapes[layer]) not in (1, 3):
            raise SpecError(f"job spec field 'layers': layer {layer!r} does not output a "
                            "(units,) or (units, h, w) tensor", given=shapes.get(layer),
                            hint="pick a convolutional module; see `ray-dissect layers`")
        if len(shapes[layer]) == 1:
            shapes[layer] = (*shapes[layer], 1, 1)
    return dataset, shapes


def run_job(spec: JobSpec, out: str | Path | AnyPath, *, address: str | None = None,
            progress: Progress | None = None, force: bool = False) -> JobSummary:
    """Run (or resume) a whole job into ``out``; return its summary (also summary.json).

    ``out`` is a local directory or an fsspec URI (:mod:`ray_dissect.storage`). Work units
    finished by an earlier run of the same spec in ``out`` are not redone.
    """
    dataset, shapes = preflight(spec)
    job, manifest = prepare_job_dir(spec, storage.location(out), force)
    run = start_run(manifest)
    tracker = Tracker(job.root, manifest, progress or _Quiet())
    try:
        summary = _run_stages(spec, job, dataset, shapes, tracker, address)
    except BaseException as err:
        run.status, run.error, run.finished = "failed", f"{type(err).__name__}: {err}", time.time()
        write_manifest(job.root, manifest)
        raise
    run.status, run.finished = "finished", time.time()
    write_manifest(job.root, manifest)
    return summary


def _run_stages(spec: JobSpec, job: JobDir, dataset: BrodenDataset,
                shapes: dict[str, tuple[int, ...]], tracker: Tracker,
                address: str | None) -> JobSummary:
    provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(), package_version=__version__)
    with ray_session(address):
        index, errors = _stage_concepts(spec, job, dataset, tracker)
        errors += _stage_activations(spec, job, dataset, shapes, tracker)
        valid = index.valid.copy()
        valid[[e.index for e in errors]] = False
        index = replace(index, valid=valid)
        thresholds = _stage_thresholds(spec, job, shapes, valid, tracker)
        space = (None if isinstance(spec.method, NetDissectMethod)
                 else SearchSpace.from_index(index))
        by_layer = _stage_scoring(spec, job, shapes, thresholds, index, space, provenance,
                                  tracker)
        by_layer = _stage_masking(spec, job, shapes, index, space, by_layer, tracker)
    for layer, records in by_layer.items():
        write_jsonl(job.records(layer), records)
    write_jsonl(job.root / "errors.jsonl", errors)
    summary = JobSummary(
        provenance=provenance, method=spec.method.kind, iou_threshold=spec.method.iou_threshold,
        images=len(dataset), valid_images=int(valid.sum()),
        bad_samples=len({e.index for e in errors}),
        layers=[summarize_layer(layer, by_layer[layer], spec.method.iou_threshold)
                for layer in spec.layers],
        stage_seconds={k: round(v.seconds, 3) for k, v in tracker.manifest.stages.items()})
    storage.write_text(job.root / "summary.json", summary.model_dump_json(indent=2) + "\n")
    return summary
