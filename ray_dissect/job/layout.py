"""Paths inside a job directory. ``DIR`` holds::

    spec.json                the validated spec (canonical JSON)
    manifest.json            spec hash, stage hashes, progress (ray_dissect.job.manifest)
    concepts.zarr            layers/set_ids (N, sh, sw) uint32 + done/set_ids
    concepts/shard_*.npz     per-shard set tables;  concepts/index.npz  the merged index
    activations.zarr         layers/<layer> (N, units, h, w) float32 + done/<layer>
    activations/bad_*.json   per-shard unreadable images
    thresholds/<layer>.npz   thresholds (units,) float64, nonfinite (units,) int64,
                             ranges (units, clusters, 2) float64 activation ranges
    parts/<layer>/<u0>-<u1>.jsonl(.done)  records of one scoring block, and its done marker
    parts/<layer>/<u0>-<u1>.masking.json(.done)  concept-masking scores of a block
    top_images/<layer>/<u0>-<u1>.npz(.done)      top images of a block of units
    studies/<study>.jsonl    a study's rows; studies/<study>/<layer>/<u0>-<u1>.jsonl(.done)
                             (unit blocks) or studies/<study>/shard_<s>.npz(.done) (images)
    attribution.zarr         data/<method> (N[, T], H, W) float32, targets, probabilities,
                             crop_boxes, feature_maps[.<layer>] + done/
    attribution/             classes.json (class names), weights.npz (first-layer filters)
    unit_attribution/<layer>/<block>.npz(.done)  per-unit attribution maps of a block of units
    receptive_fields/<layer>/<block>.npz(.done)  discrepancy of a block of distinct top images
    receptive_fields.zarr    data/<layer> (units, H, W) float32 mean re-centred maps + done/
    prism/pca_<shard>.npz(.done)  PCA sums of an image shard;  prism/pca.npz  the merged PCA
    prism.zarr               data/components, rgb, codes, presence, variance, ... + done/
    records/<layer>.jsonl    one UnitRecord per unit;  summary.json;  errors.jsonl

What each stage writes is declared in :data:`ray_dissect.pipeline.stages.STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ray_dissect import storage
from ray_dissect.storage import AnyPath

CHUNK_IMAGES = 32
SUBDIRS = ("concepts", "activations", "thresholds", "records", "parts", "top_images", "studies")
ANALYSIS_SUBDIRS = ("receptive_fields", "prism", "unit_attribution")
"""Created by their stages only when a job runs them (every job gets :data:`SUBDIRS`)."""


def layer_key(layer: str) -> str:
    """A file and Zarr node name for a layer that cannot leave its directory.

    Module names keep letters, digits, ``_``, ``-`` and ``.``; anything else (``/`` above all)
    is percent-encoded, and a name made only of dots is encoded whole.
    """
    key = quote(layer, safe="_-.")
    return key.replace(".", "%2E") if key.strip(".") == "" else key


def shard_range(shard: int, shard_images: int, n_images: int) -> tuple[int, int]:
    """Image range [start, stop) of a shard."""
    start = shard * shard_images
    return start, min(start + shard_images, n_images)


def unit_blocks(units: int, per_task: int) -> list[tuple[int, int]]:
    """Unit ranges [u0, u1) of at most ``per_task`` units covering ``units``."""
    return [(u, min(u + per_task, units)) for u in range(0, units, per_task)]


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

    @property
    def attribution_zarr(self) -> AnyPath:
        return self.root / "attribution.zarr"

    @property
    def receptive_fields_zarr(self) -> AnyPath:
        return self.root / "receptive_fields.zarr"

    def unit_attribution_part(self, layer: str, block: int) -> AnyPath:
        """A work unit's per-unit attribution maps (done marker beside it)."""
        return self.root / "unit_attribution" / layer_key(layer) / f"{block:06d}.npz"

    def receptive_fields_part(self, layer: str, block: int) -> AnyPath:
        """A work unit's discrepancy maps (done marker beside it)."""
        return self.root / "receptive_fields" / layer_key(layer) / f"{block:06d}.npz"

    @property
    def prism_zarr(self) -> AnyPath:
        return self.root / "prism.zarr"

    def prism_pca_part(self, shard: int) -> AnyPath:
        """An image shard's PCA sums (done marker beside it)."""
        return self.root / "prism" / f"pca_{shard:06d}.npz"

    @property
    def prism_pca(self) -> AnyPath:
        """The merged PCA: mean, axes, variance ratios, GE layers in application order."""
        return self.root / "prism" / "pca.npz"

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
        """A scoring block's records; its done marker is :func:`done_marker` of it."""
        return self.root / "parts" / layer_key(layer) / f"{units[0]:07d}-{units[1]:07d}.jsonl"

    def masking_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """Concept-masking scores of a scoring block (done marker beside it)."""
        return self.record_part(layer, units).with_suffix(".masking.json")

    def top_images_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """A block's top images (done marker beside it)."""
        return (self.root / "top_images" / layer_key(layer)
                / f"{units[0]:07d}-{units[1]:07d}.npz")

    def study(self, name: str) -> AnyPath:
        """A study's records, ``studies/<name>.jsonl``."""
        return self.root / "studies" / f"{name}.jsonl"

    def study_part(self, name: str, layer: str, units: tuple[int, int]) -> AnyPath:
        """A study's rows for a block of units (done marker beside it)."""
        return (self.root / "studies" / name / layer_key(layer)
                / f"{units[0]:07d}-{units[1]:07d}.jsonl")

    def study_shard(self, name: str, shard: int) -> AnyPath:
        """A study's partial sums over an image shard, ``studies/<name>/shard_<s>.npz``
        (done marker beside it)."""
        return self.root / "studies" / name / f"shard_{shard:06d}.npz"

    def make(self) -> None:
        """Create the directory and its sub-directories (no-ops on object stores)."""
        for sub in SUBDIRS:
            storage.makedirs(self.root / sub)


def done_marker(part: AnyPath) -> AnyPath:
    """The done marker of a part file: the same path with the suffix ``.done``."""
    return part.with_suffix(".done")
