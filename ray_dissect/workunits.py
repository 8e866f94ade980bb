"""The work units of each stage, as plain functions over a job directory.

Ray runs these (see :mod:`ray_dissect.runtime`), but none of them imports Ray, so each is
testable in-process. A job directory ``DIR`` holds::

    spec.json                the validated spec (canonical JSON)
    concepts.zarr            layers/set_ids (N, sh, sw) uint32 + done/set_ids
    concepts/shard_*.npz     per-shard set tables;  concepts/index.npz  the merged index
    activations.zarr         layers/<layer> (N, units, h, w) float32 + done/<layer>
    activations/bad_*.json   per-shard unreadable images
    thresholds/<layer>.npz   thresholds (units,) float64, nonfinite (units,) int64,
                             ranges (units, clusters, 2) float64 activation ranges
    parts/<layer>/<u0>-<u1>.jsonl(.done)  records of one scoring block, and its done marker
    records/<layer>.jsonl    one UnitRecord per unit;  summary.json;  errors.jsonl
    manifest.json            spec hash, stage hashes, progress (ray_dissect.manifest)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from ray_dissect import storage, store
from ray_dissect.activations import Extractor
from ray_dissect.clusters import unit_ranges
from ray_dissect.concepts import ConceptIndex, ShardIndex, build_shard
from ray_dissect.dataset import BadSampleError, BrodenDataset
from ray_dissect.formula import evaluate, from_dict
from ray_dissect.masks import UnitMask, unit_masks
from ray_dissect.metrics import ExplanationMetrics, explanation_metrics
from ray_dissect.scoring import Tally, tally
from ray_dissect.search import SearchParams, SearchResult, SearchSpace, Selector, beam_search
from ray_dissect.spec import Method, NetDissectMethod
from ray_dissect.storage import AnyPath
from ray_dissect.thresholds import unit_thresholds

CHUNK_IMAGES = 32


def layer_key(layer: str) -> str:
    """A file and Zarr node name for a layer that cannot leave its directory.

    Module names keep letters, digits, ``_``, ``-`` and ``.``; anything else (``/`` above all)
    is percent-encoded, and a name made only of dots is encoded whole.
    """
    key = quote(layer, safe="_-.")
    return key.replace(".", "%2E") if key.strip(".") == "" else key


@dataclass(frozen=True)
class JobDir:
    """Paths inside a job directory (layer names pass through :func:`layer_key`).

    ``root`` is a local directory or an fsspec location (:mod:`ray_dissect.storage`).
    """

    root: AnyPath

    @property
    def concepts_zarr(self) -> AnyPath:
        return self.root / "concepts.zarr"

    @property
    def activations_zarr(self) -> AnyPath:
        return self.root / "activations.zarr"

    def concept_shard(self, shard: int) -> AnyPath:
        return self.root / "concepts" / f"shard_{shard:06d}.npz"

    @property
    def concept_index(self) -> AnyPath:
        return self.root / "concepts" / "index.npz"

    def bad_images(self, shard: int) -> AnyPath:
        return self.root / "activations" / f"bad_{shard:06d}.json"

    def thresholds(self, layer: str) -> AnyPath:
        return self.root / "thresholds" / f"{layer_key(layer)}.npz"

    def records(self, layer: str) -> AnyPath:
        return self.root / "records" / f"{layer_key(layer)}.jsonl"

    def record_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """A scoring block's records; its done marker is the same path + ``.done``."""
        return self.root / "parts" / layer_key(layer) / f"{units[0]:07d}-{units[1]:07d}.jsonl"

    def outputs(self, stage: str) -> list[AnyPath]:
        """What a stage writes (removed when its inputs change under --force)."""
        return {"concepts": [self.concepts_zarr, self.root / "concepts"],
                "activations": [self.activations_zarr, self.root / "activations"],
                "thresholds": [self.root / "thresholds"],
                "scoring": [self.root / "parts", self.root / "records"],
                "masking": []}[stage]

    def make(self) -> None:
        for sub in ("concepts", "activations", "thresholds", "records", "parts"):
            storage.makedirs(self.root / sub)


def shard_range(shard: int, shard_images: int, n_images: int) -> tuple[int, int]:
    """Image range [start, stop) of a shard."""
    start = shard * shard_images
    return start, min(start + shard_images, n_images)


def concept_work(dataset: BrodenDataset, job: JobDir, shard: int, shard_images: int) -> None:
    """Build the concept index of one shard: write its set ids (Zarr) and set table (npz)."""
    start, stop = shard_range(shard, shard_images, len(dataset))
    part = build_shard(dataset, start, stop)
    storage.save_npz(job.concept_shard(shard), set_indptr=part.set_indptr,
                     set_labels=part.set_labels, image_indptr=part.image_indptr,
                     image_sets=part.image_sets, image_counts=part.image_counts,
                     valid=part.valid, errors=np.array(json.dumps(part.errors)))
    store.write_shard(job.concepts_zarr, "set_ids", shard, shard_images, part.set_ids)


def load_concept_shard(job: JobDir, shard: int) -> ShardIndex:
    """Read a shard's set table back (its set ids stay in Zarr)."""
    z = storage.load_npz(job.concept_shard(shard))
    errors = tuple((int(i), str(r)) for i, r in json.loads(str(z["errors"])))
    return ShardIndex(np.zeros((0, 0, 0), np.uint32), z["set_indptr"], z["set_labels"],
                      z["image_indptr"], z["image_sets"], z["image_counts"], z["valid"], errors)


def extraction_work(extractor: Extractor, dataset: BrodenDataset, job: JobDir, shard: int,
                    shard_images: int, batch_size: int) -> list[tuple[int, str]]:
    """Extract one shard of images for every layer and write each layer's Zarr shard whole.

    An unreadable image is replaced by a black one so batches keep their composition (results
    do not depend on which actor ran the shard); its activations are written as zeros and the
    image is reported. Returns (global image index, reason) for each unreadable image.
    """
    start, stop = shard_range(shard, shard_images, len(dataset))
    size = extractor.preprocess_spec.size
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in extractor.layers}
    bad: list[tuple[int, str]] = []
    for b0 in range(start, stop, batch_size):
        images, bad_rows = [], []
        for index in range(b0, min(b0 + batch_size, stop)):
            try:
                images.append(dataset.read_image(index))
            except BadSampleError as err:
                images.append(np.zeros((size, size, 3), dtype=np.uint8))
                bad_rows.append(index - b0)
                bad.append((index, str(err)))
        for layer, acts in extractor(images).items():
            acts[bad_rows] = 0.0
            out[layer].append(acts)
    for layer, parts in out.items():
        store.write_shard(job.activations_zarr, layer_key(layer), shard, shard_images,
                          np.concatenate(parts))
    return bad


def threshold_work(job: JobDir, layer: str, units: tuple[int, int], quantile: float,
                   valid: np.ndarray, clusters: int = 1, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact thresholds of units [u0, u1) over the valid images, and their activation ranges.

    Returns thresholds (k,) float64, nonfinite (k,) int64 and ranges (k, clusters, 2) float64
    ([lo, hi] per range, NaN where a unit has fewer ranges; (k, 0, 2) when clusters == 1).
    """
    acts = store.open_array(job.activations_zarr, layer_key(layer))[:, units[0]:units[1]][valid]
    thresholds, nonfinite = unit_thresholds(acts, quantile)
    ranges = np.full((acts.shape[1], clusters if clusters > 1 else 0, 2), np.nan)
    if clusters > 1:
        for u, unit in enumerate(unit_ranges(acts, clusters, seed)):
            ranges[u, : len(unit)] = unit
    return thresholds, nonfinite, ranges


@dataclass(frozen=True)
class RangeSpec:
    """One mask per unit: ``lo < a < hi`` (or ``<=`` when inclusive); (k,) float64 bounds."""

    lo: np.ndarray
    hi: np.ndarray
    inclusive: bool


def mask_work(job: JobDir, layer: str, units: tuple[int, int], ranges: list[RangeSpec],
              index: ConceptIndex, block_images: int) -> list[list[UnitMask]]:
    """Unit-mask signatures of units [u0, u1) for every range, in one pass over the images.

    Returns masks[r][u] for range r and unit u of the block.
    """
    acts = store.open_array(job.activations_zarr, layer_key(layer))
    set_ids = store.open_array(job.concepts_zarr, "set_ids")
    k = units[1] - units[0]
    parts: list[list[list[UnitMask]]] = [[[] for _ in range(k)] for _ in ranges]
    for start in range(0, index.n_images, block_images):
        stop = min(start + block_images, index.n_images)
        block = acts[start:stop, units[0]:units[1]]
        ids = index.global_set_ids(set_ids[start:stop], start)
        for r, rng in enumerate(ranges):
            masks = unit_masks(block, rng.lo, rng.hi, ids, start, index.valid[start:stop],
                               rng.inclusive)
            for u, mask in enumerate(masks):
                parts[r][u].append(mask)
    return [[UnitMask.concat(p) for p in per_range] for per_range in parts]


@dataclass(frozen=True)
class RangeExplanation:
    """The explanation of one activation range of one unit."""

    lo: float
    hi: float
    inclusive: bool
    mask_pixels: int
    result: SearchResult
    metrics: ExplanationMetrics | None


@dataclass(frozen=True)
class BlockResult:
    """What a scoring task returns for a block of units: the NetDissect tally, and per unit
    its range explanations (``None`` for ``netdissect``)."""

    tally: Tally
    explanations: list[list[RangeExplanation]] | None


def _range_specs(thresholds: np.ndarray, ranges: np.ndarray, method: Method) -> list[RangeSpec]:
    lo = np.where(np.isfinite(thresholds), thresholds, np.inf)
    specs = [RangeSpec(lo, np.full_like(lo, np.inf), inclusive=False)]
    for r in range(ranges.shape[1]):
        lo_r = np.where(np.isnan(ranges[:, r, 0]), np.inf, ranges[:, r, 0])
        hi_r = np.where(np.isnan(ranges[:, r, 1]), -np.inf, ranges[:, r, 1])
        specs.append(RangeSpec(lo_r, hi_r, getattr(method, "bounds", "strict") == "inclusive"))
    return specs


def _explain(mask: UnitMask, rng: RangeSpec, u: int, space: SearchSpace,
             params: SearchParams, pruner: Selector | None) -> RangeExplanation:
    result = beam_search(mask, space, params, pruner)
    metrics = None
    if result.beam:
        metrics = explanation_metrics(mask, evaluate(result.beam[0].formula, space.leaf), space)
    return RangeExplanation(float(rng.lo[u]), float(rng.hi[u]), rng.inclusive, mask.area,
                            result, metrics)


def scoring_work(job: JobDir, layer: str, units: tuple[int, int], thresholds: np.ndarray,
                 ranges: np.ndarray, index: ConceptIndex, space: SearchSpace | None,
                 method: Method, block_images: int) -> BlockResult:
    """Score units [u0, u1): NetDissect tally of the quantile masks, then (compositional and
    clustered methods) a beam search per unit and activation range."""
    specs = _range_specs(thresholds, ranges, method)
    masks = mask_work(job, layer, units, specs, index, block_images)
    result = tally(masks[0], index, method.denominator)
    if isinstance(method, NetDissectMethod) or space is None:
        return BlockResult(result, None)
    params = SearchParams(method.length, method.beam, method.first_beam, method.count_not,
                          method.dedup)
    pruner = None
    if method.heuristic != "none":
        from ray_dissect.pruning import Pruner

        ids = store.open_array(job.concepts_zarr, "set_ids")[:]
        pruner = Pruner(space, index.global_set_ids(ids, 0), method.heuristic)
    searched = list(range(1, len(specs))) if len(specs) > 1 else [0]
    explanations = []
    for u in range(units[1] - units[0]):
        explanations.append([_explain(masks[r][u], specs[r], u, space, params, pruner)
                             for r in searched if np.isfinite(specs[r].lo[u])])
    return BlockResult(result, explanations)


def masking_part(job: JobDir, layer: str, units: tuple[int, int]) -> AnyPath:
    """Concept-masking scores of a scoring block; done marker = same path + ``.done``."""
    return job.record_part(layer, units).with_suffix(".masking.json")


def masking_work(extractor: Extractor, dataset: BrodenDataset, job: JobDir, layer: str,
                 units: tuple[int, int], index: ConceptIndex, space: SearchSpace, seed: int,
                 batch: int, cap: int | None) -> dict[str, float | None]:
    """Concept-masking score of every explanation of a block; keys ``"<unit>:<range>"``."""
    from ray_dissect.masking import concept_masking_score
    from ray_dissect.records import read_unit_records

    acts = store.open_array(job.activations_zarr, layer_key(layer))
    set_ids = store.open_array(job.concepts_zarr, "set_ids")
    out: dict[str, float | None] = {}
    for rec in read_unit_records(job.record_part(layer, units)):
        for exp in rec.explanations:
            if exp.formula is None:
                continue
            f = evaluate(from_dict(exp.formula.model_dump()), space.leaf)
            present = np.unique(space.image_of_entry[f[space.entry_sets] & space.entry_valid])
            present = present[:cap] if cap else present

            def keep(idx: np.ndarray, f: np.ndarray = f) -> np.ndarray:
                return f[index.global_set_ids_at(set_ids.oindex[idx], idx)]

            def before(idx: np.ndarray, unit: int = rec.unit) -> np.ndarray:
                return acts.oindex[idx, unit:unit + 1][:, 0]

            hi = np.inf if exp.hi is None else exp.hi
            out[f"{rec.unit}:{exp.range_index}"] = concept_masking_score(
                extractor, layer, rec.unit, present, dataset.read_image, keep, before, exp.lo,
                hi, exp.inclusive, (seed, rec.unit, exp.range_index), batch)
    return out
