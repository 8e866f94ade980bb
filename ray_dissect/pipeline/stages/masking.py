"""Stage ``masking``: CCE's concept-masking score of every explanation (model actors).

Only for compositional and clustered jobs with ``concept_masking: true``. Work unit: one
scoring block -> ``parts/<layer>/<u0>-<u1>.masking.json`` and its done marker; the driver
merges the scores into the records' metrics.
"""

from __future__ import annotations

import json

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.explain.formula import evaluate, from_dict
from ray_dissect.explain.masking import concept_masking_score
from ray_dissect.explain.search import SearchSpace
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage
from ray_dissect.records.io import read_unit_records
from ray_dissect.records.schema import UnitRecord
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath, arrays


def masking_work(env: WorkEnv, index: ConceptIndex, space: SearchSpace, layer: str,
                 units: tuple[int, int]) -> dict[str, float | None]:
    """Concept-masking score of every explanation of a block; keys ``"<unit>:<range>"``.
    The model's map is the unit's own channel; the stored map is at the block's position."""
    job, method = env.job, env.spec.method
    seed, cap = getattr(method, "seed", 0), getattr(method, "masking_images", None)
    acts = arrays.open_array(job.activations_zarr, layer_key(layer))
    set_ids = arrays.open_array(job.concepts_zarr, "set_ids")
    out: dict[str, float | None] = {}
    records = read_unit_records(job.record_part(layer, units))
    for p, rec in enumerate(records, start=units[0]):
        for exp in rec.explanations:
            if exp.formula is None:
                continue
            f = evaluate(from_dict(exp.formula.model_dump()), space.leaf)
            present = np.unique(space.image_of_entry[f[space.entry_sets] & space.entry_valid])
            present = present[:cap] if cap else present

            def keep(idx: np.ndarray, f: np.ndarray = f) -> np.ndarray:
                return f[index.global_set_ids_at(set_ids.oindex[idx], idx)]

            def before(idx: np.ndarray, p: int = p) -> np.ndarray:
                return acts.oindex[idx, p:p + 1][:, 0]

            hi = np.inf if exp.hi is None else exp.hi
            out[f"{rec.unit}:{exp.range_index}"] = concept_masking_score(
                env.extractor, layer, rec.unit, present, env.concept_dataset.read_image, keep,
                before, exp.lo, hi, exp.inclusive, (seed, rec.unit, exp.range_index),
                env.spec.resources.batch_size)
    return out



def plan(ctx: JobContext) -> Plan | None:
    """Blocks without a done marker; ``None`` when the method asks for no concept masking."""
    if ctx.space is None or not getattr(ctx.spec.method, "concept_masking", False):
        return None
    blocks = ctx.unit_blocks()
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(ctx.job.masking_part(layer, b), ctx.stage_hash)]
    return Plan(len(blocks), len(blocks) - len(todo), todo,
                shared=(ctx.concept_index, ctx.space))


def collect(ctx: JobContext, call: tuple[str, tuple[int, int]],
            scores: dict[str, float | None]) -> int:
    """Write a block's scores, then its done marker."""
    path = ctx.job.masking_part(*call)
    storage.write_text(path, json.dumps(scores))
    mark_done(path, ctx.stage_hash)
    return 1


def finish(ctx: JobContext) -> int:
    """Merge every block's scores into the records' metrics."""
    scores: dict[tuple[str, str], float | None] = {}
    for layer, b in ctx.unit_blocks():
        for key, value in json.loads(storage.read_text(ctx.job.masking_part(layer, b))).items():
            scores[(layer, key)] = value
    ctx.records = {layer: [_with_masking(r, scores) for r in records]
                   for layer, records in ctx.records.items()}
    return 0


def _with_masking(rec: UnitRecord, scores: dict[tuple[str, str], float | None]) -> UnitRecord:
    explanations = [
        e.model_copy(update={"metrics": e.metrics.model_copy(update={
            "concept_masking": scores.get((rec.layer, f"{rec.unit}:{e.range_index}"))})})
        if e.metrics is not None else e for e in rec.explanations]
    return rec.model_copy(update={"explanations": explanations})


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """None of its own: its scores sit beside the scoring stage's parts (``parts/``)."""
    return ()


def concept_masking(spec: JobSpec) -> bool:
    """Whether the job scores concept masking (the method's ``concept_masking``)."""
    return bool(getattr(spec.method, "concept_masking", False))


STAGE = Stage(name="masking", runs_on="actors", work=masking_work, plan=plan, collect=collect,
              finish=finish, outputs=outputs, covers=None,
              used=concept_masking)
