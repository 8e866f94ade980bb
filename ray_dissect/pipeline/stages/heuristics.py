"""Stage ``heuristics`` (study): CCE's ``compare_heuristics``, the same beam searches with
each IoU-bound heuristic (CPU tasks over unit blocks; only with ``studies.heuristics``).

Work unit: block [u0, u1) of a layer -> for every unit and range the method explains (the
scoring's masks, in the scoring's passes), one beam search per heuristic, timed around the
search alone: states visited, seconds, best formula and IoU. Driver: rows per block under
``studies/heuristics/``, then ``studies/heuristics.jsonl`` with a layer row per heuristic
(means, total seconds, and how many searches found the unpruned search's best formula).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Literal

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.datasets.base import ImageDataset
from ray_dissect.explain.formula import to_string
from ray_dissect.explain.ranges import RangeSpec, range_specs, searched_ranges
from ray_dissect.explain.search import SearchParams, SearchSpace, Selector, beam_search
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, required_section, section, uses
from ray_dissect.pipeline.stages.image_studies import needs_concepts, study_error, study_outputs
from ray_dissect.pipeline.stages.scoring import (
    inclusive_bounds,
    mask_work,
    pruner_for,
    signature_budget,
    signature_passes,
    sub_ranges,
)
from ray_dissect.records.io import read_jsonl, write_jsonl
from ray_dissect.records.studies import HeuristicsRow
from ray_dissect.report.studies import STUDIES_PAGE
from ray_dissect.spec import CompositionalMethod, HeuristicsSpec, JobSpec

NAME = "heuristics"
LABEL_ONLY = ("iou_threshold", "top_k", "heuristic", "concept_masking", "masking_images")
Heuristic = Literal["none", "areas", "cfh", "mmesh"]


def _study(env: WorkEnv | JobContext) -> HeuristicsSpec:
    return required_section(env.spec, "studies", "heuristics", HeuristicsSpec)


def _method(env: WorkEnv) -> CompositionalMethod:
    method = env.spec.method
    if not isinstance(method, CompositionalMethod):
        raise RuntimeError("the heuristics study needs a compositional method")
    return method


def block_work(env: WorkEnv, index: ConceptIndex, space: SearchSpace, layer: str,
               units: tuple[int, int], thresholds: np.ndarray, ranges: np.ndarray,
               ids: np.ndarray) -> list[HeuristicsRow]:
    """The rows of units [u0, u1) (``ids`` (k,) int64 their indices in the layer), a row per
    unit, explained range and heuristic, in that order."""
    specs = range_specs(thresholds, ranges, inclusive_bounds(env.spec.method))
    pruners: dict[Heuristic, Selector | None] = {
        h: pruner_for(env.job, space, index, h) for h in _study(env).heuristics}
    passes = signature_passes(env.job, layer, units, specs, index,
                              env.spec.resources.shard_images, signature_budget(env))
    rows = []
    for a, b in passes:
        rows += _pass_rows(env, index, space, layer, (units[0] + a, units[0] + b),
                           sub_ranges(specs, a, b), ids[a:b], pruners)
    return rows


def _pass_rows(env: WorkEnv, index: ConceptIndex, space: SearchSpace, layer: str,
               units: tuple[int, int], specs: list[RangeSpec], ids: np.ndarray,
               pruners: dict[Heuristic, Selector | None]) -> list[HeuristicsRow]:
    m = _method(env)
    params = SearchParams(m.length, m.beam, m.first_beam, m.count_not, m.dedup)
    masks = mask_work(env.job, layer, units, specs, index, env.spec.resources.shard_images)
    rows = []
    for u in range(units[1] - units[0]):
        for k, r in enumerate(searched_ranges(specs, u)):
            for heuristic, pruner in pruners.items():
                t0 = time.perf_counter()
                found = beam_search(masks[r][u], space, params, pruner)
                seconds = time.perf_counter() - t0
                best = found.beam[0] if found.beam else None
                rows.append(HeuristicsRow(
                    layer=layer, heuristic=heuristic, unit=int(ids[u]), range_index=k,
                    visited=found.visited, seconds=seconds,
                    formula=to_string(best.formula, index.vocab.names) if best else None,
                    iou=best.iou if best else None))
    return rows


def plan(ctx: JobContext) -> Plan | None:
    """Blocks without a done marker; None without the study. Index and space are shared."""
    if ctx.spec.studies.heuristics is None:
        return None
    if ctx.space is None:
        ctx.space = SearchSpace.from_index(ctx.concept_index)
    blocks = ctx.unit_blocks()
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(ctx.job.study_part(NAME, layer, b), ctx.stage_hash)]
    calls = [(layer, b, ctx.thresholds[layer][0][b[0]:b[1]],
              ctx.thresholds[layer][2][b[0]:b[1]], ctx.unit_ids(layer)[b[0]:b[1]])
             for layer, b in todo]
    return Plan(len(blocks), len(blocks) - len(todo), calls,
                shared=(ctx.concept_index, ctx.space))


def collect(ctx: JobContext, call: tuple[str, tuple[int, int], np.ndarray, np.ndarray,
                                         np.ndarray], rows: list[HeuristicsRow]) -> int:
    """Write a block's rows, then its done marker."""
    part = ctx.job.study_part(NAME, call[0], call[1])
    storage.makedirs(part.parent)
    write_jsonl(part, rows)
    mark_done(part, ctx.stage_hash)
    return 1


def layer_rows(rows: list[HeuristicsRow]) -> list[HeuristicsRow]:
    """Per (layer, heuristic) in first-seen order: searches, mean visited and seconds, total
    seconds, and the searches whose best formula equals the unpruned one (None without
    heuristic ``none``)."""
    groups: dict[tuple[str, Heuristic], list[HeuristicsRow]] = defaultdict(list)
    for r in rows:
        groups[(r.layer, r.heuristic)].append(r)
    out = []
    for (layer, heuristic), group in groups.items():
        plain = {(r.unit, r.range_index): r.formula for r in groups.get((layer, "none"), [])}
        same = (sum(1 for r in group if plain.get((r.unit, r.range_index)) == r.formula)
                if plain else None)
        total = sum(r.seconds for r in group)
        out.append(HeuristicsRow(
            layer=layer, heuristic=heuristic, ranges=len(group), total_seconds=total,
            visited=sum(r.visited for r in group) / len(group), seconds=total / len(group),
            same_best=same))
    return out


def finish(ctx: JobContext) -> int:
    """Join the blocks' rows (layer, unit order) and add the layer rows after them."""
    rows = [r for layer, b in ctx.unit_blocks()
            for r in read_jsonl(ctx.job.study_part(NAME, layer, b), HeuristicsRow)]
    write_jsonl(ctx.job.study(NAME), rows + layer_rows(rows))
    return 0


def check_dataset(spec: JobSpec, dataset: ImageDataset) -> None:
    """Preflight: with the study set, a compositional or clustered method and the concept
    study's needs (a concept dataset)."""
    if spec.studies.heuristics is None:
        return
    if not isinstance(spec.method, CompositionalMethod):
        raise study_error(NAME, f"needs a compositional or clustered method (got "
                          f"{spec.method.kind!r})", "use method kind compositional or clustered")
    needs_concepts(NAME)(spec, dataset)


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``studies.heuristics`` section and the method's fields the masks and searches
    depend on (not the labelling's, nor the scoring's own heuristic)."""
    method = {k: v for k, v in data["method"].items() if k not in LABEL_ONLY}
    return {"heuristics": section(spec, "studies", NAME), "method": method}


STAGE = Stage(name=NAME, runs_on="tasks", work=block_work, plan=plan, collect=collect,
              finish=finish, outputs=study_outputs(NAME), covers=covers, owns=("studies",),
              check_dataset=check_dataset, report=STUDIES_PAGE,
              used=uses("studies", NAME))
