"""Stage ``threshold_sweep`` (study): labels, and formulas for compositional jobs, at several
activation quantiles (CPU tasks over unit blocks; only with ``studies.threshold_sweep``).

Work unit: block [u0, u1) of a layer -> per quantile q the exact per-unit threshold T_q
(exact zeros counted as the job's thresholds count them, or with ``zeros: drop`` left out for
non-negative units, as CCE's compare_thresholds), the unit masks of
the high tail (T_q, inf) for q <= 0.5 or the low tail below T_q for q > 0.5, their NetDissect
labels, the IoUs of each unit's curve concepts (its ``CURVE_CONCEPTS`` concepts of highest
IoU at any quantile: per-unit IoU-vs-threshold curves) and (compositional) beam-searched
formulas with their positive atoms. Driver: rows per block under ``studies/threshold_sweep/``,
then ``studies/threshold_sweep.jsonl`` with per-quantile category shares of the labels and of
the formulas' atoms (CCE's ``compare_thresholds``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.explain.formula import positive_leaves, to_string
from ray_dissect.explain.netdissect import label_units, per_image_iou, tally
from ray_dissect.explain.ranges import RangeSpec, explain_range, per_image_ranges
from ray_dissect.explain.search import SearchParams, SearchSpace
from ray_dissect.job.layout import layer_key
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, required_section, section, uses
from ray_dissect.pipeline.stages.image_studies import needs_concepts, study_outputs
from ray_dissect.pipeline.stages.scoring import (
    mask_work,
    signature_budget,
    signature_passes,
    sub_ranges,
)
from ray_dissect.pipeline.stages.thresholds import threshold_blocks
from ray_dissect.records.build import concept_of, concept_score
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.studies import ThresholdSweepRow
from ray_dissect.report.studies import STUDIES_PAGE
from ray_dissect.spec import CompositionalMethod, JobSpec, ThresholdSweepSpec
from ray_dissect.storage import arrays

NAME = "threshold_sweep"
CURVE_CONCEPTS = 5


def tail_range(values: np.ndarray, q: float, drop_zeros: bool = False
               ) -> tuple[float, float]:
    """(lo, hi) of one unit's tail at quantile ``q`` over its finite values (n,) float64.

    With ``drop_zeros`` exact zeros are left out when no value is negative (CCE); else they
    count, as in the job's thresholds. ``q <= 0.5``: (T, inf) with T the 1 - q quantile;
    ``q > 0.5``: (0, T) (or (-inf, T) for a unit with negative values).
    """
    values = values[np.isfinite(values)]
    nonneg = values.size > 0 and values.min() >= 0
    if nonneg and drop_zeros:
        values = values[values != 0]
    if values.size == 0:
        return np.inf, -np.inf
    t = float(np.quantile(values, 1.0 - q))
    if q <= 0.5:
        return t, np.inf
    return (0.0 if nonneg else -np.inf), t


@dataclass(frozen=True)
class SweepBlock:
    """Per quantile (Q) and unit (k): range bounds, mask pixels, best label, formula.

    ``curve`` (k, CURVE_CONCEPTS) int64 each unit's curve concepts (-1: none) and
    ``curve_iou`` (Q, k, CURVE_CONCEPTS) float64 their IoUs; ``atoms`` per quantile and
    unit the positive atoms of the best formula (empty without one)."""

    lo: np.ndarray
    hi: np.ndarray
    pixels: np.ndarray
    label: np.ndarray
    iou: np.ndarray
    formulas: list[list[tuple[str, float] | None]]
    curve: np.ndarray
    curve_iou: np.ndarray
    atoms: list[list[tuple[int, ...]]]


def curve_concepts(ious: np.ndarray, known: np.ndarray, n: int = CURVE_CONCEPTS
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's ``n`` concepts of highest IoU at any quantile, and their IoUs.

    Args:
        ious: (Q, k, L) float64 IoU of each unit with each label at each quantile.
        known: (L,) bool labels that may be chosen (a primary category).
    Returns:
        (k, n) int64 label numbers by descending peak IoU (ties: lower number; -1 where
        fewer than ``n`` labels have a positive IoU) and (Q, k, n) float64 their IoUs (0 at -1).
    """
    peak = np.where(known[None, :], ious.max(axis=0), -1.0)
    order = np.argsort(-peak, axis=1, kind="stable")[:, :n]
    chosen = np.where(np.take_along_axis(peak, order, axis=1) > 0, order, -1)
    values = np.take_along_axis(ious, np.maximum(chosen, 0)[None], axis=2)
    return chosen.astype(np.int64), np.where(chosen[None] >= 0, values, 0.0)


def _sweep(env: WorkEnv) -> ThresholdSweepSpec:
    return required_section(env.spec, "studies", "threshold_sweep", ThresholdSweepSpec)


def _ranges(env: WorkEnv, valid: np.ndarray, layer: str, units: tuple[int, int]
            ) -> list[RangeSpec]:
    acts = arrays.open_array(env.job.activations_zarr, layer_key(layer))[:, units[0]:units[1]]
    if _sweep(env).rule == "per_image":
        return [per_image_ranges(acts, q) for q in _sweep(env).quantiles]
    acts, drop = acts[valid], _sweep(env).zeros == "drop"
    out = []
    for q in _sweep(env).quantiles:
        bounds = [tail_range(acts[:, u].astype(np.float64).reshape(-1), q, drop)
                  for u in range(units[1] - units[0])]
        out.append(RangeSpec(np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds]),
                             inclusive=False))
    return out


def block_work(env: WorkEnv, index: ConceptIndex, space: SearchSpace | None,
               valid: np.ndarray, layer: str, units: tuple[int, int]) -> SweepBlock:
    """Label (and explain) units [u0, u1) at every quantile of the sweep, in passes of units
    whose signatures fit the scoring's budget (see :mod:`ray_dissect.pipeline.stages.scoring`)."""
    ranges = _ranges(env, valid, layer, units)
    shard = env.spec.resources.shard_images
    passes = signature_passes(env.job, layer, units, ranges, index, shard,
                              signature_budget(env))
    return _concat([_sweep_pass(env, index, space, layer, (units[0] + a, units[0] + b),
                                sub_ranges(ranges, a, b)) for a, b in passes])


def _concat(parts: list[SweepBlock]) -> SweepBlock:
    """The sweep of consecutive unit passes, in unit order."""
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts], axis=1)

    quantiles = range(len(parts[0].formulas))
    formulas = [[f for p in parts for f in p.formulas[q]] for q in quantiles]
    atoms = [[a for p in parts for a in p.atoms[q]] for q in quantiles]
    return SweepBlock(cat("lo"), cat("hi"), cat("pixels"), cat("label"), cat("iou"), formulas,
                      np.concatenate([p.curve for p in parts]), cat("curve_iou"), atoms)


def _sweep_pass(env: WorkEnv, index: ConceptIndex, space: SearchSpace | None, layer: str,
                units: tuple[int, int], ranges: list[RangeSpec]) -> SweepBlock:
    """:func:`block_work` of units [u0, u1) with their ``ranges``, in one pass."""
    method = env.spec.dissection()
    masks = mask_work(env.job, layer, units, ranges, index, env.spec.resources.shard_images)
    eps = 1e-10 if method.denominator == "category" else 0.0
    per_image = _sweep(env).rule == "per_image"
    ious = np.stack([per_image_iou(m, index) if per_image
                     else tally(m, index, method.denominator).iou(eps) for m in masks])
    labels = [label_units(iou, index, 1) for iou in ious]
    if per_image:  # per-image thresholds: no one T_q per unit
        ranges = [RangeSpec(np.full(len(m), np.nan), np.full(len(m), np.nan), False)
                  for m in masks]
    formulas: list[list[tuple[str, float] | None]] = [[None] * len(m) for m in masks]
    atoms: list[list[tuple[int, ...]]] = [[()] * len(m) for m in masks]
    if isinstance(method, CompositionalMethod) and space is not None:
        params = SearchParams(method.length, method.beam, method.first_beam, method.count_not,
                              method.dedup)
        for qi, per_q in enumerate(masks):
            for u, mask in enumerate(per_q):
                found = explain_range(mask, ranges[qi], u, space, params, None).result.beam
                if found:
                    formulas[qi][u] = (to_string(found[0].formula, index.vocab.names),
                                       found[0].iou)
                    atoms[qi][u] = positive_leaves(found[0].formula)
    return SweepBlock(np.stack([r.lo for r in ranges]), np.stack([r.hi for r in ranges]),
                      np.array([[m.area for m in per_q] for per_q in masks], dtype=np.int64),
                      np.array([[lab.best[0] for lab in q] for q in labels], dtype=np.int64),
                      np.array([[lab.best[1] for lab in q] for q in labels]), formulas,
                      *curve_concepts(ious, index.vocab.primary >= 0), atoms)


def plan(ctx: JobContext) -> Plan | None:
    """Blocks (sized like the threshold stage's) without a done marker; None without the
    study. The index, search space and valid images are shared."""
    if ctx.spec.studies.threshold_sweep is None:
        return None
    n = len(ctx.valid_images)
    blocks = [(layer, b) for layer in ctx.spec.layers for b in threshold_blocks(
        ctx.stored_shape(layer), n, ctx.spec.resources.units_per_task)]
    ctx.parts[NAME] = blocks
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(ctx.job.study_part(NAME, layer, b), ctx.stage_hash)]
    return Plan(len(blocks), len(blocks) - len(todo), todo,
                shared=(ctx.concept_index, ctx.space, ctx.valid_images))


def _rows(ctx: JobContext, layer: str, b0: int, block: SweepBlock) -> list[ThresholdSweepRow]:
    sweep, vocab = ctx.spec.studies.threshold_sweep, ctx.concept_index.vocab
    assert sweep is not None
    rows, ids = [], ctx.unit_ids(layer)
    for qi, q in enumerate(sweep.quantiles):
        for u in range(block.label.shape[1]):
            number, formula = int(block.label[qi, u]), block.formulas[qi][u]
            high = q <= 0.5 or sweep.rule == "per_image"
            t = block.lo[qi, u] if high else block.hi[qi, u]
            rows.append(ThresholdSweepRow(
                quantile=q, tail="high" if high else "low", layer=layer, unit=int(ids[b0 + u]),
                threshold=float(t) if np.isfinite(t) else None,
                mask_pixels=int(block.pixels[qi, u]),
                label=concept_score(vocab, number, float(block.iou[qi, u])) if number else None,
                formula=formula[0] if formula else None,
                formula_iou=formula[1] if formula else None,
                formula_atoms=[concept_of(vocab, c) for c in block.atoms[qi][u]]
                if formula else None,
                curve=[concept_score(vocab, int(c), float(v)) for c, v in
                       zip(block.curve[u], block.curve_iou[qi, u], strict=True) if c >= 0]))
    return rows


def collect(ctx: JobContext, call: tuple[str, tuple[int, int]], block: SweepBlock) -> int:
    """Write a block's rows, then its done marker."""
    layer, (b0, b1) = call
    part = ctx.job.study_part(NAME, layer, (b0, b1))
    storage.makedirs(part.parent)
    write_jsonl(part, _rows(ctx, layer, b0, block))
    mark_done(part, ctx.stage_hash)
    return 1


def _shares(rows: list[ThresholdSweepRow], iou_threshold: float) -> list[ThresholdSweepRow]:
    """Per (layer, quantile): each category's share among the interpretable labels and (with
    formulas) among the positive atoms of the units' best formulas."""
    out = []
    for (layer, q, tail), group in _grouped(rows).items():
        cats = Counter(r.label.category for r in group
                       if r.label is not None and r.label.iou >= iou_threshold)
        explained = [r for r in group if r.formula_atoms is not None]
        atoms = Counter(a.category for r in explained for a in r.formula_atoms or [])
        out.append(ThresholdSweepRow(
            quantile=q, tail=tail, layer=layer, category_shares=_fractions(cats),
            formula_category_shares=_fractions(atoms) if explained else None))
    return out


def _fractions(counts: Counter[str]) -> dict[str, float]:
    """Each key's share of the total, by key ({} for no counts)."""
    total = sum(counts.values())
    return {c: n / total for c, n in sorted(counts.items())} if total else {}


def _grouped(rows: list[ThresholdSweepRow]
             ) -> dict[tuple[str, float, str], list[ThresholdSweepRow]]:
    groups: dict[tuple[str, float, str], list[ThresholdSweepRow]] = {}
    for r in rows:
        groups.setdefault((r.layer, r.quantile, r.tail), []).append(r)
    return groups


def finish(ctx: JobContext) -> int:
    """Join the blocks' rows (quantile, layer, unit order) and add the category shares."""
    from ray_dissect.records.io import read_jsonl

    rows = [r for layer, b in ctx.parts[NAME]
            for r in read_jsonl(ctx.job.study_part(NAME, layer, b), ThresholdSweepRow)]
    rows.sort(key=lambda r: (r.quantile, ctx.spec.layers.index(r.layer), r.unit or 0))
    write_jsonl(ctx.job.study(NAME), rows + _shares(rows, ctx.spec.dissection().iou_threshold))
    return 0


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``studies.threshold_sweep`` section and the method (it labels at every quantile)."""
    return {"threshold_sweep": section(spec, "studies", NAME), "method": data["method"]}


STAGE = Stage(name=NAME, runs_on="tasks", work=block_work, plan=plan, collect=collect,
              finish=finish, outputs=study_outputs(NAME), covers=covers, owns=("studies",),
              check_dataset=needs_concepts(NAME), report=STUDIES_PAGE,
              used=uses("studies", NAME))
