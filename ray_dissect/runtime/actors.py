"""Model-replica actors, fed work units dynamically (extraction, concept masking)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ray_dissect.errors import RayDissectError, StageError
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.context import WorkEnv
from ray_dissect.pipeline.stages import stage
from ray_dissect.spec import JobSpec

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def raise_cause(err: Any, what: str) -> None:
    """Re-raise a remote failure: our own errors as themselves, anything else as StageError."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, RayDissectError):
        raise cause from None
    raise StageError(f"{what} failed: {cause!r}",
                     hint="see the Ray logs above; rerun the same command to resume") from err


class ModelActor:
    """Holds one model replica (built on first use) and the dataset reader; runs any
    ``actors`` stage's work units on request."""

    def __init__(self, spec_json: str, job_root: str, device: str) -> None:
        self.env = WorkEnv.from_json(spec_json, job_root, device)

    def run(self, name: str, *args: Any) -> Any:
        """Run one work unit of stage ``name``: ``work(env, *args)``."""
        return stage(name).work(self.env, *args)


def run_on_actors(spec: JobSpec, job: JobDir, gpus: float, name: str,
                  calls: list[tuple[Any, ...]], on_done: Callable[[int, Any], None]) -> None:
    """Run work units of stage ``name`` (``ModelActor.run(name, *call)``) for every call on
    ``spec.resources.actors`` model actors.

    Calls are handed out one at a time to whichever actor is free, so a slow actor does not
    hold the others. An actor that dies is replaced and its call redone (at most
    ``MAX_ATTEMPTS`` times per call); ``on_done(i, result)`` runs on the driver as each call
    completes.
    """
    import ray

    res = spec.resources
    remote_cls = ray.remote(ModelActor).options(
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
            inflight[actor.run.remote(name, *calls[i])] = (actor, i)

    actors: list[Any] = [remote_cls.remote(*args) for _ in range(min(res.actors, len(calls)))]
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
                    raise StageError(f"{name} work unit {i} failed {MAX_ATTEMPTS} times",
                                     hint="see the Ray logs; rerun to resume") from err
                log.warning("model actor died during %s %d; replacing it", name, i)
                queue.appendleft(i)
                actors.remove(actor)
                actor = remote_cls.remote(*args)
                actors.append(actor)
            except ray.exceptions.RayTaskError as err:
                raise_cause(err, f"{name} work unit {i}")
            else:
                on_done(i, result)
            submit(actor)
    finally:
        for actor in actors:
            ray.kill(actor)
