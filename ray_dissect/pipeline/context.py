"""What stages share: the driver-side job context, work-unit plans, and the worker-side
environment a work unit runs in.

A stage's driver-side steps (``plan``, ``collect``, ``finish`` in the stage table) read and
fill a :class:`JobContext`; its work units run on workers with a :class:`WorkEnv`, built from
the spec and the job directory alone, so a work unit runs the same on a Ray worker, an actor
or in a test.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.datasets.registry import open_concept_dataset, open_dataset
from ray_dissect.job.layout import JobDir, unit_blocks
from ray_dissect.records.schema import Provenance, SampleError, UnitRecord
from ray_dissect.spec import JobSpec
from ray_dissect.spec.units import UnitsSpec, selected_units
from ray_dissect.storage import location

if TYPE_CHECKING:
    from ray_dissect.concepts.index import ConceptIndex
    from ray_dissect.explain.search import SearchSpace
    from ray_dissect.models.extract import Extractor
    from ray_dissect.pipeline.shard_pipeline import ShardPipeline


@dataclass(frozen=True)
class Plan:
    """The work units a stage still has to run in this job directory.

    Attributes:
        total: work units of the stage (its progress unit: shards, layers or unit blocks).
        done: of those, already finished by earlier runs.
        calls: per remote call, its own arguments (a call may finish 0 or more work units).
        shared: arguments common to every call (sent to the cluster once), passed first.
    """

    total: int
    done: int
    calls: list[tuple[Any, ...]]
    shared: tuple[Any, ...] = ()


@dataclass
class JobContext:
    """The driver's view of a running job, filled stage by stage.

    Attributes:
        dataset: the images (a ConceptDataset unless the method is ``none``).
        valid: (N,) bool images that count (set by the activations stage: readable images
            whose labels, when there are any, were read).
        shapes: per layer its output shape (units, h, w), all units of the model.
        thresholds: per layer (thresholds (U,) float64, nonfinite (U,) int64,
            ranges (U, clusters, 2) float64), U the layer's chosen units (:meth:`unit_ids`).
        parts: per-stage scratch for results that arrive before a work unit is whole.
        timings: fixed costs an executor measured during the current stage (seconds, e.g.
            ``activations.actor_spawn``); the runner moves them to the manifest's run timings.
        stage_hash: the hash of the stage now running (set by the runner), which its done
            markers record (:mod:`ray_dissect.job.markers`).
    """

    spec: JobSpec
    job: JobDir
    dataset: ImageDataset
    shapes: dict[str, tuple[int, ...]]
    provenance: Provenance
    errors: list[SampleError] = field(default_factory=list)
    index: ConceptIndex | None = None
    valid: np.ndarray | None = None
    thresholds: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    space: SearchSpace | None = None
    records: dict[str, list[UnitRecord]] = field(default_factory=dict)
    parts: dict[Any, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    stage_hash: str = ""

    def unit_blocks(self) -> list[tuple[str, tuple[int, int]]]:
        """(layer, (u0, u1)) of every block of ``units_per_task`` units, in layer order; the
        bounds are positions among the layer's chosen units (:meth:`unit_ids`)."""
        per_task = self.spec.resources.units_per_task
        return [(layer, b) for layer in self.spec.layers
                for b in unit_blocks(len(self.unit_ids(layer)), per_task)]

    def unit_ids(self, layer: str) -> np.ndarray:
        """(k,) int64 the layer's chosen units (``units:``), ascending: position p of the
        activation store (and of every per-unit array) is unit ``unit_ids(layer)[p]``."""
        return selected_units(self.spec.units, layer, self.shapes[layer][0])

    def all_units(self, layer: str, values: np.ndarray, fill: float) -> np.ndarray:
        """``values`` (k, ...) per chosen unit -> (U, ...) per unit of the layer's model
        output, ``fill`` for the units not chosen (what hooks on the model take)."""
        out = np.full((self.shapes[layer][0], *values.shape[1:]), fill, dtype=values.dtype)
        out[self.unit_ids(layer)] = values
        return out

    def stored_shape(self, layer: str) -> tuple[int, ...]:
        """(k, h, w) of the layer's activation store: its chosen units only."""
        return (len(self.unit_ids(layer)), *self.shapes[layer][1:])

    @property
    def concept_dataset(self) -> ConceptDataset:
        """The dataset, for the stages that read concept labels."""
        if not isinstance(self.dataset, ConceptDataset):
            raise RuntimeError("a concept stage ran on a dataset without concept labels")
        return self.dataset

    @property
    def valid_images(self) -> np.ndarray:
        """(N,) bool images that count (set by the activations stage)."""
        if self.valid is None:
            raise RuntimeError("the activations stage has not run")
        return self.valid

    @property
    def concept_index(self) -> ConceptIndex:
        """The merged concept index (set by the concepts stage)."""
        if self.index is None:
            raise RuntimeError("the concepts stage has not run")
        return self.index


class WorkEnv:
    """What a work unit runs with on a worker: the spec, the job directory, the dataset (opened
    on first use) and, on model actors, the extractor (built on first use on ``device``) and
    the extraction pipeline around it (:meth:`shard_pipeline`, safe to call from threads).

    ``timings`` holds the seconds its one-off builds took (``dataset_open``, ``model_load``),
    until :meth:`drain_timings` hands them over."""

    def __init__(self, spec: JobSpec, job: JobDir, device: str = "cpu") -> None:
        self.spec, self.job, self.device = spec, job, device
        self._lock = threading.Lock()
        self._pipeline: ShardPipeline | None = None
        self.timings: dict[str, float] = {}

    @classmethod
    def from_blob(cls, spec_blob: bytes, root: str, device: str = "cpu") -> WorkEnv:
        """A new environment from :func:`spec_blob`'s bytes and the job directory's location."""
        spec = pickle.loads(spec_blob)
        if not isinstance(spec, JobSpec):
            raise TypeError(f"a spec blob holds a {type(spec).__name__}, expected a JobSpec")
        return cls(spec, JobDir(location(root)), device)

    @cached_property
    def dataset(self) -> ImageDataset:
        """The images (any format; the concept dataset when that is open already)."""
        if "concept_dataset" in self.__dict__:
            return self.concept_dataset
        with self._timed("dataset_open"):
            return open_dataset(self.spec.dataset)

    @cached_property
    def concept_dataset(self) -> ConceptDataset:
        """The dataset, for work units that read concept labels (parsed once: the images'
        dataset is reused when it has them)."""
        opened = self.__dict__.get("dataset")
        if isinstance(opened, ConceptDataset):
            return opened
        with self._timed("dataset_open"):
            return open_concept_dataset(self.spec.dataset)

    @cached_property
    def model(self) -> Any:
        """A model replica without hooks (for gradient methods), on ``device``, eval mode."""
        from ray_dissect.models.build import build_model

        with self._timed("model_load"):
            torch_threads(self.spec.resources.threads_per_actor)
            return build_model(self.spec.model).to(self.device)

    @cached_property
    def extractor(self) -> Extractor:
        """The hooked model replica extraction runs (built on first use)."""
        from ray_dissect.models.extract import Extractor

        res = self.spec.resources
        with self._timed("model_load"):
            return Extractor(self.spec.model, self.spec.layers, res.threads_per_actor,
                             self.device)

    def chosen(self, layer: str, width: int) -> np.ndarray | None:
        """(k,) int64 the chosen units of ``layer`` (of ``width``; ``units:``), None for all."""
        if self.spec.units == "all":
            return None
        return _selected(self.spec.units, layer, width)

    def keep_chosen(self, maps: dict[str, Any]) -> dict[str, Any]:
        """{layer: (n, units, h, w) array or tensor} -> the same with the chosen units only
        (the objects themselves when every unit is kept)."""
        out = {}
        for layer, m in maps.items():
            ids = self.chosen(layer, int(m.shape[1]))
            if ids is None:
                out[layer] = m
            elif isinstance(m, np.ndarray):
                out[layer] = np.ascontiguousarray(m[:, ids])
            else:  # a torch tensor, on its device
                out[layer] = m[:, ids.tolist()].contiguous()
        return out

    @contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0

    def drain_timings(self) -> dict[str, float]:
        """The one-off build seconds since the last call (then forgotten)."""
        out, self.timings = self.timings, {}
        return out

    def shard_pipeline(self) -> ShardPipeline:
        """This replica's extraction pipeline, started on first use (once, under a lock, as
        two calls may arrive together on a threaded actor)."""
        from ray_dissect.pipeline.shard_pipeline import ShardPipeline

        with self._lock:
            if self._pipeline is None:
                self._pipeline = ShardPipeline(self)
            return self._pipeline

    def close(self) -> None:
        """Stop the extraction pipeline's threads, if it was started (the extractor stays)."""
        with self._lock:
            pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()


def torch_threads(threads: int) -> None:
    """Fix torch's intra-op threads (results must not depend on the machine's core count)."""
    import torch

    torch.set_num_threads(threads)


def spec_blob(spec: JobSpec) -> bytes:
    """The driver's validated spec, pickled for the workers. Unpickling a pydantic model does
    not run its validators, so a worker does not redo the driver's checks, which import
    torchvision to check a model name (seconds in a fresh worker that needs no torch)."""
    return pickle.dumps(spec)


@lru_cache(maxsize=256)
def _selected(units: UnitsSpec, layer: str, width: int) -> np.ndarray:
    """:func:`selected_units`, drawn once per process (extraction asks every batch)."""
    return selected_units(units, layer, width)


@lru_cache(maxsize=4)
def task_env(spec: bytes, root: str) -> WorkEnv:
    """The environment of CPU tasks (from :func:`spec_blob`'s bytes), kept per worker process
    (the dataset index is parsed once per process, not once per task)."""
    return WorkEnv.from_blob(spec, root)
