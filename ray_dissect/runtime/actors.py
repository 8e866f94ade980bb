"""Model-replica actors for activation extraction, fed shards dynamically."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ray_dissect.activations import Extractor
from ray_dissect.concepts import ConceptIndex
from ray_dissect.dataset import open_dataset
from ray_dissect.errors import RayDissectError, StageError
from ray_dissect.search import SearchSpace
from ray_dissect.spec import JobSpec
from ray_dissect.storage import location
from ray_dissect.workunits import JobDir, extraction_work, masking_work

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def raise_cause(err: Any, what: str) -> None:
    """Re-raise a remote failure: our own errors as themselves, anything else as StageError."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, RayDissectError):
        raise cause from None
    raise StageError(f"{what} failed: {cause!r}",
                     hint="see the Ray logs above; rerun the same command to resume") from err


class ExtractionActor:
    """Holds one model replica and the dataset reader; extracts whole shards on request."""

    def __init__(self, spec_json: str, job_root: str, device: str) -> None:
        self.spec = JobSpec.model_validate_json(spec_json)
        res = self.spec.resources
        self.extractor = Extractor(self.spec.model, self.spec.layers, res.threads_per_actor,
                                   device)
        self.dataset = open_dataset(self.spec.dataset)
        self.job = JobDir(location(job_root))

    def run(self, shard: int) -> list[tuple[int, str]]:
        """Extract shard ``shard``; return its unreadable images."""
        res = self.spec.resources
        return extraction_work(self.extractor, self.dataset, self.job, shard, res.shard_images,
                               res.batch_size)

    def mask(self, layer: str, units: tuple[int, int], index: ConceptIndex,
             space: SearchSpace) -> dict[str, float | None]:
        """Concept-masking scores of one scoring block's explanations."""
        method = self.spec.method
        return masking_work(self.extractor, self.dataset, self.job, layer, units, index, space,
                            getattr(method, "seed", 0), self.spec.resources.batch_size,
                            getattr(method, "masking_images", None))


def run_on_actors(spec: JobSpec, job: JobDir, gpus: float, method: str,
                  calls: list[tuple[Any, ...]], on_done: Callable[[int, Any], None]) -> None:
    """Run ``ExtractionActor.<method>(*call)`` for every call on ``spec.resources.actors``
    model actors.

    Calls are handed out one at a time to whichever actor is free, so a slow actor does not
    hold the others. An actor that dies is replaced and its call redone (at most
    ``MAX_ATTEMPTS`` times per call); ``on_done(i, result)`` runs on the driver as each call
    completes.
    """
    import ray

    res = spec.resources
    remote_cls = ray.remote(ExtractionActor).options(
        num_cpus=res.cpus_per_actor, num_gpus=gpus, resources=dict(res.actor_resources),
        max_restarts=0)
    args = (spec.model_dump_json(), str(job.root), "cuda" if gpus > 0 else "cpu")
    queue = deque(range(len(calls)))
    attempts = [0] * len(calls)
    inflight: dict[Any, tuple[Any, int]] = {}

    def submit(actor: Any) -> None:
        if queue:
            i = queue.popleft()
            attempts[i] += 1
            inflight[getattr(actor, method).remote(*calls[i])] = (actor, i)

    actors = [remote_cls.remote(*args) for _ in range(min(res.actors, len(calls)))]
    try:
        for actor in actors:
            submit(actor)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            actor, i = inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                if attempts[i] >= MAX_ATTEMPTS:
                    raise StageError(f"{method} work unit {i} failed {MAX_ATTEMPTS} times",
                                     hint="see the Ray logs; rerun to resume") from err
                log.warning("model actor died during %s %d; replacing it", method, i)
                queue.appendleft(i)
                actors.remove(actor)
                actor = remote_cls.remote(*args)
                actors.append(actor)
            except ray.exceptions.RayTaskError as err:
                raise_cause(err, f"{method} work unit {i}")
            else:
                on_done(i, result)
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor)


def run_extraction(spec: JobSpec, job: JobDir, shards: list[int], gpus: float,
                   on_done: Callable[[int, list[tuple[int, str]]], None]) -> None:
    """Extract ``shards``; ``on_done(shard, bad_images)`` as each shard completes."""
    run_on_actors(spec, job, gpus, "run", [(s,) for s in shards],
                  lambda i, bad: on_done(shards[i], bad))
