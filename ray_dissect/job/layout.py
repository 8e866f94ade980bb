"""Paths inside a job directory. ``DIR`` holds::

    spec.json                the validated spec (canonical JSON)
    manifest.json            spec hash, stage hashes, progress (ray_dissect.job.manifest)
    .lock                    the writer holding the directory (ray_dissect.job.lock)
    concepts.zarr            data/set_ids (N, sh, sw) uint32 + done/set_ids
    concepts/shard_*.npz     per-shard set tables;  concepts/index.npz  the merged index
    activations.zarr         data/<layer> (N, units, h, w) float32 + done/<layer>
    activations/bad_*.json   per-shard unreadable images
    thresholds/<layer>.npz   thresholds (units,) float64, nonfinite (units,) int64,
                             ranges (units, clusters, 2) float64 activation ranges
    parts/<layer>/<u0>-<u1>.jsonl(.done)  records of one scoring block, and its done marker
    parts/<layer>/<u0>-<u1>.masking.json(.done)  concept-masking scores of a block
    top_images/<layer>/<u0>-<u1>.npz(.done)      top images of a block of units
    studies/<study>.jsonl    a study's rows; studies/<study>/<layer>/<u0>-<u1>.jsonl(.done)
                             (unit blocks) or studies/<study>/shard_<s>.npz(.done) (images)
    attribution.zarr         data/<method> (N[, T], H, W) float32, targets, probabilities,
                             crop_boxes, feature_maps[.<layer>] + done/;
                             attribution/classes.json (class names), weights.npz (filters)
    unit_attribution/<layer>/<block>.npz(.done)  per-unit attribution maps of a block of units
    receptive_fields/<layer>/<block>.npz(.done)  discrepancy of a block of distinct top images
    receptive_fields.zarr    data/<layer> (units, H, W) float32 mean re-centred maps + done/
    prism/pca_<shard>.npz(.done)  PCA sums of an image shard;  prism/pca.npz  the merged PCA
    prism.zarr               data/components, rgb, codes, presence, variance, ... + done/
    records/<layer>.jsonl    one UnitRecord per unit;  summary.json;  errors.jsonl

Every Zarr store holds its arrays under ``data/`` and their done markers under ``done/``, with
``digests/<array>/<shard>.json`` beside them (:mod:`ray_dissect.storage.arrays`); a ``.done``
marker holds its stage's hash and its part's sha256 (:mod:`ray_dissect.job.markers`). What each
stage writes is declared by its module (``Stage.outputs``, :mod:`ray_dissect.pipeline.stages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ray_dissect import storage
from ray_dissect.storage import AnyPath

CHUNK_IMAGES = 32
SUBDIRS = ("concepts", "activations", "thresholds", "records", "parts", "top_images", "studies")
"""Created for every job by :meth:`JobDir.make`; other stages' directories are created by the
stages that write them (only when a job runs them)."""


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

    ``root`` is a local directory or an fsspec location (:mod:`ray_dissect.storage`). A stage
    names its own files with the generic :meth:`stage_dir`, :meth:`store`, :meth:`block_part`
    and :meth:`shard_part` (the named paths below are built from them), so a new stage needs
    no edit here.
    """

    root: AnyPath

    def stage_dir(self, name: str) -> AnyPath:
        """A stage's own directory, ``DIR/<name>`` (e.g. ``studies/unit_ablation``)."""
        return self.root / name

    def store(self, name: str) -> AnyPath:
        """A stage's Zarr store, ``DIR/<name>.zarr``."""
        return self.root / f"{name}.zarr"

    def block_part(self, folder: str, layer: str, units: tuple[int, int], suffix: str
                   ) -> AnyPath:
        """A block of units' part file, ``DIR/<folder>/<layer>/<u0>-<u1><suffix>`` (done
        marker beside it)."""
        return (self.stage_dir(folder) / layer_key(layer)
                / f"{units[0]:07d}-{units[1]:07d}{suffix}")

    def shard_part(self, folder: str, prefix: str, shard: int, suffix: str) -> AnyPath:
        """An image shard's (or other work unit's) part file,
        ``DIR/<folder>/<prefix><shard:06d><suffix>``."""
        return self.stage_dir(folder) / f"{prefix}{shard:06d}{suffix}"

    @property
    def concepts_zarr(self) -> AnyPath:
        return self.store("concepts")

    @property
    def activations_zarr(self) -> AnyPath:
        return self.store("activations")

    @property
    def attribution_zarr(self) -> AnyPath:
        return self.store("attribution")

    @property
    def receptive_fields_zarr(self) -> AnyPath:
        return self.store("receptive_fields")

    def unit_attribution_part(self, layer: str, block: int) -> AnyPath:
        """A work unit's per-unit attribution maps (done marker beside it)."""
        return self.root / "unit_attribution" / layer_key(layer) / f"{block:06d}.npz"

    def receptive_fields_part(self, layer: str, block: int) -> AnyPath:
        """A work unit's discrepancy maps (done marker beside it)."""
        return self.shard_part(f"receptive_fields/{layer_key(layer)}", "", block, ".npz")

    @property
    def prism_zarr(self) -> AnyPath:
        return self.store("prism")

    def prism_pca_part(self, shard: int) -> AnyPath:
        """An image shard's PCA sums (done marker beside it)."""
        return self.shard_part("prism", "pca_", shard, ".npz")

    @property
    def prism_pca(self) -> AnyPath:
        """The merged PCA: mean, axes, variance ratios, GE layers in application order."""
        return self.stage_dir("prism") / "pca.npz"

    def concept_shard(self, shard: int) -> AnyPath:
        return self.shard_part("concepts", "shard_", shard, ".npz")

    @property
    def concept_index(self) -> AnyPath:
        return self.stage_dir("concepts") / "index.npz"

    def bad_images(self, shard: int) -> AnyPath:
        return self.shard_part("activations", "bad_", shard, ".json")

    def thresholds(self, layer: str) -> AnyPath:
        return self.stage_dir("thresholds") / f"{layer_key(layer)}.npz"

    def records(self, layer: str) -> AnyPath:
        return self.stage_dir("records") / f"{layer_key(layer)}.jsonl"

    def record_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """A scoring block's records; its done marker is :func:`done_marker` of it."""
        return self.block_part("parts", layer, units, ".jsonl")

    def masking_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """Concept-masking scores of a scoring block (done marker beside it)."""
        return self.block_part("parts", layer, units, ".masking.json")

    def top_images_part(self, layer: str, units: tuple[int, int]) -> AnyPath:
        """A block's top images (done marker beside it)."""
        return self.block_part("top_images", layer, units, ".npz")

    def study(self, name: str) -> AnyPath:
        """A study's records, ``studies/<name>.jsonl``."""
        return self.stage_dir("studies") / f"{name}.jsonl"

    def study_part(self, name: str, layer: str, units: tuple[int, int]) -> AnyPath:
        """A study's rows for a block of units (done marker beside it)."""
        return self.block_part(f"studies/{name}", layer, units, ".jsonl")

    def study_shard(self, name: str, shard: int) -> AnyPath:
        """A study's partial sums over an image shard, ``studies/<name>/shard_<s>.npz``
        (done marker beside it)."""
        return self.shard_part(f"studies/{name}", "shard_", shard, ".npz")

    def make(self) -> None:
        """Create the directory and its sub-directories (no-ops on object stores)."""
        for sub in SUBDIRS:
            storage.makedirs(self.root / sub)


def done_marker(part: AnyPath) -> AnyPath:
    """The done marker of a part file: the same path with the suffix ``.done``."""
    return part.with_suffix(".done")
