"""Model-replica actors for activation extraction, fed shards dynamically."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray_dissect.activations import Extractor
from ray_dissect.dataset import open_dataset
from ray_dissect.errors import RayDissectError, StageError
from ray_dissect.spec import JobSpec
from ray_dissect.workunits import JobDir, extraction_work

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
        self.job = JobDir(Path(job_root))

    def run(self, shard: int) -> list[tuple[int, str]]:
        """Extract shard ``shard``; return its unreadable images."""
        res = self.spec.resources
        return extraction_work(self.extractor, self.dataset, self.job, shard, res.shard_images,
                               res.batch_size)


def run_extraction(spec: JobSpec, job: JobDir, shards: list[int], gpus: float,
                   on_done: Callable[[int, list[tuple[int, str]]], None]) -> None:
    """Extract ``shards`` with ``spec.resources.actors`` model actors.

    Shards are handed out one at a time to whichever actor is free, so a slow actor does not
    hold the others. An actor that dies is replaced and its shard redone (at most
    ``MAX_ATTEMPTS`` times per shard); ``on_done(shard, bad_images)`` runs on the driver as
    each shard completes.
    """
    import ray

    res = spec.resources
    remote_cls = ray.remote(ExtractionActor).options(
        num_cpus=res.cpus_per_actor, num_gpus=gpus, resources=dict(res.actor_resources),
        max_restarts=0)
    device = "cuda" if gpus > 0 else "cpu"
    args = (spec.model_dump_json(), str(job.root), device)
    queue = deque(shards)
    attempts = dict.fromkeys(shards, 0)
    inflight: dict[Any, tuple[Any, int]] = {}

    def submit(actor: Any) -> None:
        if queue:
            shard = queue.popleft()
            attempts[shard] += 1
            inflight[actor.run.remote(shard)] = (actor, shard)

    actors = [remote_cls.remote(*args) for _ in range(min(res.actors, len(shards)))]
    try:
        for actor in actors:
            submit(actor)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            actor, shard = inflight.pop(ready[0])
            try:
                bad = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                if attempts[shard] >= MAX_ATTEMPTS:
                    raise StageError(f"extraction of shard {shard} failed {MAX_ATTEMPTS} times",
                                     hint="see the Ray logs; rerun to resume") from err
                log.warning("extraction actor died on shard %d; replacing it", shard)
                queue.appendleft(shard)
                actors.remove(actor)
                actor = remote_cls.remote(*args)
                actors.append(actor)
            except ray.exceptions.RayTaskError as err:
                raise_cause(err, f"extraction of shard {shard}")
            else:
                on_done(shard, bad)
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
