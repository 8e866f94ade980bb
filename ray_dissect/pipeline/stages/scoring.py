"""Stage ``scoring``: NetDissect labels and (compositional, clustered) explanations per unit,
one block of units per work unit (CPU tasks).

Work unit: block [u0, u1) of a layer -> its unit masks for every range, the NetDissect tally
and the beam searches. Driver: ``parts/<layer>/<u0>-<u1>.jsonl`` (validated records) and its
done marker.

Memory: a task holds the signatures of the units it is scoring, which grow with the dataset
(a k-means range covers most of a unit's firing pixels, so a clustered unit's signatures
have about as many entries as the dataset's label-set histogram). When the block's worst
case exceeds ``resources.signature_mb``, its units are scored in consecutive passes, each
over all images, whose signatures fit that budget by an upper bound
(:func:`~ray_dissect.concepts.masks.signature_bound`, from one read of the maps); a pass's
signatures are released before the next. The records are the same for any split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.device import device_range_masks
from ray_dissect.concepts.index import ConceptIndex
from ray_dissect.concepts.kernels import kernel_name
from ray_dissect.concepts.masks import Bounds, UnitMask, range_masks, signature_bound
from ray_dissect.explain.netdissect import Tally, label_units, per_image_iou, tally
from ray_dissect.explain.optimal import Budget
from ray_dissect.explain.ranges import (
    RangeExplanation,
    RangeSpec,
    explain_range,
    per_image_ranges,
    range_specs,
    searched_ranges,
)
from ray_dissect.explain.search import SearchParams, SearchSpace, Selector
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import Stage, dissecting
from ray_dissect.records.build import unit_record
from ray_dissect.records.io import read_unit_records, write_jsonl
from ray_dissect.spec import CompositionalMethod, Method, NetDissectMethod, NoMethod
from ray_dissect.spec.method import DissectionMethod
from ray_dissect.storage import AnyPath, arrays

ENTRY_BYTES = 12  # a signature entry: (image, set, count) int32


def mask_work(job: JobDir, layer: str, units: tuple[int, int], ranges: list[RangeSpec],
              index: ConceptIndex, block_images: int, device: str = "cpu"
              ) -> list[list[UnitMask]]:
    """Unit-mask signatures of units [u0, u1) for every range, in one pass over the images.

    A range's bounds are (k,) per unit or (N, k) per image and unit. All ranges of a block of
    images are counted together (:func:`~ray_dissect.concepts.masks.range_masks`), so a unit's
    maps are read and tiled once for its quantile and k-means ranges. Returns masks[r][u] for
    range r and unit u of the block. On a GPU ``device`` the masks are counted there
    (:func:`~ray_dissect.concepts.device.device_range_masks`, identical results).
    """
    acts = arrays.open_array(job.activations_zarr, layer_key(layer))
    set_ids = arrays.open_array(job.concepts_zarr, "set_ids")
    k = units[1] - units[0]
    parts: list[list[list[UnitMask]]] = [[[] for _ in range(k)] for _ in ranges]
    for start in range(0, index.n_images, block_images):
        stop = min(start + block_images, index.n_images)
        block = acts[start:stop, units[0]:units[1]]
        ids = index.global_set_ids(set_ids[start:stop], start)
        args = (block, _block_bounds(ranges, start, stop), ids, start, index.valid[start:stop])
        masks = range_masks(*args) if device == "cpu" else device_range_masks(*args, device)
        for r, per_unit in enumerate(masks):
            for u, mask in enumerate(per_unit):
                parts[r][u].append(mask)
    return [[UnitMask.concat(p) for p in per_range] for per_range in parts]


def signature_bounds(job: JobDir, layer: str, units: tuple[int, int], ranges: list[RangeSpec],
                     index: ConceptIndex, block_images: int) -> np.ndarray:
    """(k,) int64 upper bound on the signature entries of each unit of [u0, u1), all ranges
    together, from one pass over the maps (no masks)."""
    acts = arrays.open_array(job.activations_zarr, layer_key(layer))
    sizes = np.diff(index.image_indptr)
    total = np.zeros(units[1] - units[0], dtype=np.int64)
    for start in range(0, index.n_images, block_images):
        stop = min(start + block_images, index.n_images)
        total += signature_bound(acts[start:stop, units[0]:units[1]],
                                 _block_bounds(ranges, start, stop), index.valid[start:stop],
                                 sizes[start:stop])
    return total


def _block_bounds(ranges: list[RangeSpec], start: int, stop: int) -> list[Bounds]:
    """The ranges' bounds for images [start, stop): (k,) per unit as they are, (N, k) per
    image and unit sliced to the block."""
    def rows(bound: np.ndarray) -> np.ndarray:
        return bound[start:stop] if bound.ndim == 2 else bound

    return [(rows(r.lo), rows(r.hi), r.inclusive) for r in ranges]


def unit_passes(entries: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive unit ranges [a, b) of a block whose summed ``entries`` (k,) stay within
    ``budget``; a unit over the budget on its own gets a pass of its own."""
    passes, start, used = [], 0, 0
    for u, e in enumerate(entries.tolist()):
        if u > start and used + e > budget:
            passes.append((start, u))
            start, used = u, 0
        used += e
    return [*passes, (start, len(entries))] if len(entries) else []


def signature_passes(job: JobDir, layer: str, units: tuple[int, int], ranges: list[RangeSpec],
                     index: ConceptIndex, block_images: int, budget_bytes: int
                     ) -> list[tuple[int, int]]:
    """The passes [a, b) (block-local units) whose signatures fit ``budget_bytes``; one pass,
    without reading anything, when even the worst case (every range holding the whole
    label-set histogram for every unit) fits."""
    k = units[1] - units[0]
    if k * len(ranges) * len(index.image_sets) * ENTRY_BYTES <= budget_bytes:
        return [(0, k)]
    entries = signature_bounds(job, layer, units, ranges, index, block_images)
    return unit_passes(entries, budget_bytes // ENTRY_BYTES)


def sub_ranges(ranges: list[RangeSpec], a: int, b: int) -> list[RangeSpec]:
    """The ranges of a block's units [a, b) (block-local)."""
    return [RangeSpec(r.lo[..., a:b], r.hi[..., a:b], r.inclusive) for r in ranges]


@dataclass(frozen=True)
class BlockResult:
    """What a scoring task returns for a block of units: the NetDissect tally, and per unit
    its range explanations (``None`` for ``netdissect``)."""

    tally: Tally
    explanations: list[list[RangeExplanation]] | None
    seconds: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def concat(parts: list[BlockResult]) -> BlockResult:
        """The result of consecutive unit passes, in unit order."""
        if len(parts) == 1:
            return parts[0]
        t = [p.tally for p in parts]
        scores = None if t[0].scores is None else np.concatenate([x.scores for x in t
                                                                   if x.scores is not None])
        tally_ = Tally(np.concatenate([x.inter for x in t]), np.concatenate([x.area for x in t]),
                       t[0].label_area, np.concatenate([x.activation for x in t]), scores)
        seconds = {k: sum(p.seconds.get(k, 0.0) for p in parts) for k in parts[0].seconds}
        if parts[0].explanations is None:
            return BlockResult(tally_, None, seconds)
        return BlockResult(tally_, [e for p in parts for e in p.explanations or []], seconds)


def timings(block: BlockResult) -> dict[str, float]:
    """The stage's breakdown: seconds of the unit masks, keyed by the kernels that computed
    them (``masks_numba``, ``masks_numpy`` or ``masks_device``), and of the searches."""
    return block.seconds


def pruner_for(job: JobDir, space: SearchSpace, index: ConceptIndex, heuristic: str
               ) -> Selector | None:
    """The beam search's candidate selector for ``heuristic`` (None for ``none``)."""
    if heuristic == "none":
        return None
    from ray_dissect.explain.pruning import Pruner

    ids = arrays.open_array(job.concepts_zarr, "set_ids")[:]
    return Pruner(space, index.global_set_ids(ids, 0), heuristic)


def per_image(method: Method | NoMethod) -> bool:
    """Whether the method thresholds each image's map on its own (``threshold: per_image``)."""
    return isinstance(method, NetDissectMethod) and method.threshold == "per_image"


def inclusive_bounds(method: Method | NoMethod) -> bool:
    """Whether the method's k-means ranges include their bounds (clustered, ``inclusive``)."""
    return getattr(method, "bounds", "strict") == "inclusive"


def scoring_work(job: JobDir, layer: str, units: tuple[int, int], thresholds: np.ndarray,
                 ranges: np.ndarray, index: ConceptIndex, space: SearchSpace | None,
                 method: DissectionMethod, block_images: int, budget_bytes: int,
                 device: str = "cpu") -> BlockResult:
    """Score units [u0, u1): NetDissect tally of the quantile masks, then (compositional and
    clustered methods) a beam search per unit and activation range; in passes of units
    whose signatures fit ``budget_bytes``; the masks on ``device`` (see :func:`mask_work`)."""
    specs = range_specs(thresholds, ranges, inclusive_bounds(method))
    if per_image(method):
        acts = arrays.open_array(job.activations_zarr, layer_key(layer))[:, units[0]:units[1]]
        specs = [per_image_ranges(acts, method.quantile)]
    if not isinstance(method, CompositionalMethod):
        space = None
    pruner = None
    if isinstance(method, CompositionalMethod) and space is not None:
        pruner = pruner_for(job, space, index, method.heuristic)
    passes = signature_passes(job, layer, units, specs, index, block_images, budget_bytes)
    return BlockResult.concat([
        _score_pass(job, layer, (units[0] + a, units[0] + b), sub_ranges(specs, a, b), index,
                    space, method, block_images, pruner, device)
        for a, b in passes])


def _score_pass(job: JobDir, layer: str, units: tuple[int, int], specs: list[RangeSpec],
                index: ConceptIndex, space: SearchSpace | None, method: DissectionMethod,
                block_images: int, pruner: Selector | None, device: str) -> BlockResult:
    """Masks, tally and searches of units [u0, u1) (``specs`` theirs), in one pass."""
    t0 = time.perf_counter()
    masks = mask_work(job, layer, units, specs, index, block_images, device)
    kernels = kernel_name() if device == "cpu" else "device"
    seconds = {f"masks_{kernels}": time.perf_counter() - t0}
    result = tally(masks[0], index, method.denominator)
    if per_image(method):
        result = replace(result, scores=per_image_iou(masks[0], index))
    if not isinstance(method, CompositionalMethod) or space is None:
        return BlockResult(result, None, seconds)
    t0 = time.perf_counter()
    params = SearchParams(method.length, method.beam, method.first_beam, method.count_not,
                          method.dedup)
    budget = method.search_budget
    limits = Budget(budget.seconds, budget.nodes) if budget else None
    explanations = []
    for u in range(units[1] - units[0]):
        explanations.append([explain_range(masks[r][u], specs[r], u, space, params, pruner,
                                           method.search, limits)
                             for r in searched_ranges(specs, u)])
    return BlockResult(result, explanations, seconds | {"search": time.perf_counter() - t0})


def block_work(env: WorkEnv, index: ConceptIndex, space: SearchSpace | None, layer: str,
               units: tuple[int, int], thresholds: np.ndarray, ranges: np.ndarray
               ) -> BlockResult:
    """The work unit as the stage table runs it: :func:`scoring_work` with the spec's method."""
    return scoring_work(env.job, layer, units, thresholds, ranges, index, space,
                        env.spec.dissection(), env.spec.resources.shard_images,
                        signature_budget(env), env.device)


def signature_budget(env: WorkEnv) -> int:
    """``resources.signature_mb`` in bytes."""
    return int(env.spec.resources.signature_mb * 2**20)



def plan(ctx: JobContext) -> Plan | None:
    """Every block without a done marker; the index and search space are shared. None for
    method ``none``."""
    if not ctx.spec.dissects:
        return None
    index = ctx.concept_index
    if not isinstance(ctx.spec.method, NetDissectMethod):
        ctx.space = SearchSpace.from_index(index)
    blocks = ctx.unit_blocks()
    todo = [(layer, b) for layer, b in blocks
            if not verified_done(ctx.job.record_part(layer, b), ctx.stage_hash)]
    calls = [(layer, b, ctx.thresholds[layer][0][b[0]:b[1]], ctx.thresholds[layer][2][b[0]:b[1]])
             for layer, b in todo]
    return Plan(len(blocks), len(blocks) - len(todo), calls, shared=(index, ctx.space))


def collect(ctx: JobContext, call: tuple[str, tuple[int, int], np.ndarray, np.ndarray],
            block: BlockResult) -> int:
    """Turn a block's result into validated records; write them, then the done marker."""
    layer, (b0, b1) = call[0], call[1]
    method, index = ctx.spec.dissection(), ctx.concept_index
    t, nonfinite, _ranges = ctx.thresholds[layer]
    eps = 1e-10 if method.denominator == "category" else 0.0
    labels = label_units(block.tally.iou(eps), index, method.top_k)
    ids = ctx.unit_ids(layer)
    records = [
        unit_record(layer, int(ids[b0 + k]), lab,
                    np.nan if per_image(method) else float(t[b0 + k]), int(nonfinite[b0 + k]),
                    float(block.tally.area[k]), method.iou_threshold,
                    block.explanations[k] if block.explanations else None, index.vocab,
                    ctx.provenance)
        for k, lab in enumerate(labels)]
    part = ctx.job.record_part(layer, (b0, b1))
    storage.makedirs(part.parent)
    write_jsonl(part, records)
    mark_done(part, ctx.stage_hash)
    return 1


def finish(ctx: JobContext) -> int:
    """Read every block's records back, in unit order per layer."""
    ctx.records = {layer: [] for layer in ctx.spec.layers}
    for layer, b in ctx.unit_blocks():
        ctx.records[layer].extend(read_unit_records(ctx.job.record_part(layer, b)))
    return 0


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``parts/`` and ``records/``."""
    return job.stage_dir("parts"), job.stage_dir("records")


STAGE = Stage(name="scoring", runs_on="tasks", work=block_work, plan=plan, collect=collect,
              finish=finish, outputs=outputs, covers=None, timings=timings, on_gpus=True,
              used=dissecting)
