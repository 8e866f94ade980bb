"""CPU Ray tasks around the work units, and a helper that runs a batch of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from ray_dissect.concepts import ConceptIndex
from ray_dissect.dataset import open_dataset
from ray_dissect.runtime.actors import raise_cause
from ray_dissect.search import SearchSpace
from ray_dissect.spec import AnyDatasetSpec, Method
from ray_dissect.storage import location
from ray_dissect.workunits import BlockResult, JobDir, concept_work, scoring_work, threshold_work


def concept_task(dataset_json: str, job_root: str, shard: int, shard_images: int) -> int:
    """Build one shard of the concept index; return the shard number."""
    dataset = open_dataset(TypeAdapter(AnyDatasetSpec).validate_json(dataset_json))
    concept_work(dataset, JobDir(location(job_root)), shard, shard_images)
    return shard


def threshold_task(job_root: str, layer: str, units: tuple[int, int], quantile: float,
                   valid: np.ndarray, clusters: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds, non-finite counts and activation ranges of a block of units."""
    return threshold_work(JobDir(location(job_root)), layer, units, quantile, valid, clusters, seed)


def scoring_task(job_root: str, layer: str, units: tuple[int, int], thresholds: np.ndarray,
                 ranges: np.ndarray, index: ConceptIndex, space: SearchSpace | None,
                 method: Method, block_images: int) -> BlockResult:
    """NetDissect tally and (compositional/clustered) explanations of a block of units."""
    return scoring_work(JobDir(location(job_root)), layer, units, thresholds, ranges, index, space,
                        method, block_images)


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], cpus: float,
              what: str, on_done: Callable[[int, Any], None]) -> None:
    """Run ``fn(*args)`` for each call as Ray tasks; ``on_done(i, result)`` as each finishes.

    System failures (a dead worker) are retried by Ray; an error raised by the work itself
    stops the stage with that error.
    """
    import ray

    remote = ray.remote(fn).options(num_cpus=cpus, max_retries=3)
    pending = {remote.remote(*args): i for i, args in enumerate(calls)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            for ref in pending:
                ray.cancel(ref)
            raise_cause(err, f"{what} {i}")
        on_done(i, result)
