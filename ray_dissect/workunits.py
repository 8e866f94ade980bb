"""The work units of each stage, as plain functions over a job directory.

Ray runs these (see :mod:`ray_dissect.runtime`), but none of them imports Ray, so each is
testable in-process. A job directory ``DIR`` holds::

    spec.json                the validated spec (canonical JSON)
    concepts.zarr            layers/set_ids (N, sh, sw) uint32 + done/set_ids
    concepts/shard_*.npz     per-shard set tables;  concepts/index.npz  the merged index
    activations.zarr         layers/<layer> (N, units, h, w) float32 + done/<layer>
    activations/bad_*.json   per-shard unreadable images
    thresholds/<layer>.npz   thresholds (units,) float64, nonfinite (units,) int64
    records/<layer>.jsonl    one UnitRecord per unit;  summary.json;  errors.jsonl
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ray_dissect import store
from ray_dissect.activations import Extractor
from ray_dissect.concepts import ConceptIndex, ShardIndex, build_shard
from ray_dissect.dataset import BadSampleError, BrodenDataset
from ray_dissect.masks import UnitMask, unit_masks
from ray_dissect.scoring import Tally, tally
from ray_dissect.thresholds import unit_thresholds

CHUNK_IMAGES = 32


@dataclass(frozen=True)
class JobDir:
    """Paths inside a job directory."""

    root: Path

    @property
    def concepts_zarr(self) -> Path:
        return self.root / "concepts.zarr"

    @property
    def activations_zarr(self) -> Path:
        return self.root / "activations.zarr"

    def concept_shard(self, shard: int) -> Path:
        return self.root / "concepts" / f"shard_{shard:06d}.npz"

    @property
    def concept_index(self) -> Path:
        return self.root / "concepts" / "index.npz"

    def bad_images(self, shard: int) -> Path:
        return self.root / "activations" / f"bad_{shard:06d}.json"

    def thresholds(self, layer: str) -> Path:
        return self.root / "thresholds" / f"{layer}.npz"

    def records(self, layer: str) -> Path:
        return self.root / "records" / f"{layer}.jsonl"

    def make(self) -> None:
        for sub in ("concepts", "activations", "thresholds", "records"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


def shard_range(shard: int, shard_images: int, n_images: int) -> tuple[int, int]:
    """Image range [start, stop) of a shard."""
    start = shard * shard_images
    return start, min(start + shard_images, n_images)


def concept_work(dataset: BrodenDataset, job: JobDir, shard: int, shard_images: int) -> None:
    """Build the concept index of one shard: write its set ids (Zarr) and set table (npz)."""
    start, stop = shard_range(shard, shard_images, len(dataset))
    part = build_shard(dataset, start, stop)
    tmp = job.concept_shard(shard).with_suffix(".tmp.npz")
    np.savez(tmp, set_indptr=part.set_indptr, set_labels=part.set_labels,
             image_indptr=part.image_indptr, image_sets=part.image_sets,
             image_counts=part.image_counts, valid=part.valid,
             errors=np.array(json.dumps(part.errors)))
    tmp.replace(job.concept_shard(shard))
    store.write_shard(job.concepts_zarr, "set_ids", shard, shard_images, part.set_ids)


def load_concept_shard(job: JobDir, shard: int) -> ShardIndex:
    """Read a shard's set table back (its set ids stay in Zarr)."""
    with np.load(job.concept_shard(shard)) as z:
        errors = tuple((int(i), str(r)) for i, r in json.loads(str(z["errors"])))
        return ShardIndex(np.zeros((0, 0, 0), np.uint32), z["set_indptr"], z["set_labels"],
                          z["image_indptr"], z["image_sets"], z["image_counts"], z["valid"],
                          errors)


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
        store.write_shard(job.activations_zarr, layer, shard, shard_images,
                          np.concatenate(parts))
    return bad


def threshold_work(job: JobDir, layer: str, units: tuple[int, int], quantile: float,
                   valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact thresholds of units [u0, u1) of a layer over the valid images."""
    acts = store.open_array(job.activations_zarr, layer)[:, units[0]:units[1]]
    return unit_thresholds(acts[valid], quantile)


def mask_work(job: JobDir, layer: str, units: tuple[int, int], lo: np.ndarray,
              hi: np.ndarray, index: ConceptIndex, block_images: int) -> list[UnitMask]:
    """Unit-mask signatures of units [u0, u1), streaming over blocks of images."""
    acts = store.open_array(job.activations_zarr, layer)
    set_ids = store.open_array(job.concepts_zarr, "set_ids")
    parts: list[list[UnitMask]] = [[] for _ in range(units[1] - units[0])]
    for start in range(0, index.n_images, block_images):
        stop = min(start + block_images, index.n_images)
        block = acts[start:stop, units[0]:units[1]]
        ids = index.global_set_ids(set_ids[start:stop], start)
        for u, mask in enumerate(unit_masks(block, lo, hi, ids, start, index.valid[start:stop])):
            parts[u].append(mask)
    return [UnitMask.concat(p) for p in parts]


def scoring_work(job: JobDir, layer: str, units: tuple[int, int], thresholds: np.ndarray,
                 index: ConceptIndex, denominator: str, block_images: int) -> Tally:
    """NetDissect tally of units [u0, u1): masks above their thresholds against all concepts."""
    lo = np.where(np.isfinite(thresholds), thresholds, np.inf)
    hi = np.full_like(lo, np.inf)
    masks = mask_work(job, layer, units, lo, hi, index, block_images)
    return tally(masks, index, denominator)  # type: ignore[arg-type]
