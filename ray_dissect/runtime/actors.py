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
                  calls: list[tuple[Any, ...]], on_done: Callable[[int, Any], None],
                  per_actor: int = 1) -> None:
    """Run work units of stage ``name`` (``ModelActor.run(name, *call)``) for every call on
    ``spec.resources.actors`` model actors.

    Calls are handed out to whichever actor has room, ``per_actor`` in flight on each (the
    actor then runs them in that many threads, so it can start the next while finishing the
    last), so a slow actor does not hold the others. When an actor dies, every call it held
    is redone (at most ``MAX_ATTEMPTS`` times per call) and the actor replaced once;
    ``on_done(i, result)`` runs on the driver as each call completes.
    """
    import ray

    res = spec.resources
    remote_cls = ray.remote(ModelActor).options(
        num_cpus=res.cpus_per_actor, num_gpus=gpus, resources=dict(res.actor_resources),
        max_restarts=0, max_concurrency=per_actor)
    args = (spec.model_dump_json(), str(job.root), "cuda" if gpus > 0 else "cpu")
    pool = _Pool(name, calls, per_actor)
    actors: list[Any] = [remote_cls.remote(*args) for _ in range(min(res.actors, len(calls)))]
    try:
        for actor in actors:
            pool.fill(actor)
        while pool.inflight:
            ready, _ = ray.wait(list(pool.inflight), num_returns=1)
            actor, i = pool.inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                pool.requeue(actor, i, err)
                log.warning("model actor died during %s %d; replacing it", name, i)
                actors.remove(actor)
                actor = remote_cls.remote(*args)
                actors.append(actor)
            except ray.exceptions.RayTaskError as err:
                raise_cause(err, f"{name} work unit {i}")
            else:
                on_done(i, result)
            pool.fill(actor)
    finally:
        for actor in actors:
            ray.kill(actor)


class _Pool:
    """The driver's book of calls: queued, in flight per actor, attempts per call."""

    def __init__(self, name: str, calls: list[tuple[Any, ...]], per_actor: int) -> None:
        self.name, self.calls, self.per_actor = name, calls, per_actor
        self.queue = deque(range(len(calls)))
        self.attempts = [0] * len(calls)
        self.inflight: dict[Any, tuple[Any, int]] = {}

    def fill(self, actor: Any) -> None:
        """Hand ``actor`` queued calls until it has ``per_actor`` in flight."""
        held = sum(1 for a, _ in self.inflight.values() if a is actor)
        for _ in range(self.per_actor - held):
            if not self.queue:
                return
            i = self.queue.popleft()
            self.attempts[i] += 1
            self.inflight[actor.run.remote(self.name, *self.calls[i])] = (actor, i)

    def requeue(self, actor: Any, i: int, err: Exception) -> None:
        """Put call ``i`` and every other call the dead ``actor`` held back at the front of
        the queue, in their order; raise StageError once a call has had its attempts."""
        held = [ref for ref, (a, _) in self.inflight.items() if a is actor]
        lost = [i] + [self.inflight.pop(ref)[1] for ref in held]
        for j in sorted(lost, reverse=True):
            if self.attempts[j] >= MAX_ATTEMPTS:
                raise StageError(f"{self.name} work unit {j} failed {MAX_ATTEMPTS} times",
                                 hint="see the Ray logs; rerun to resume") from err
            self.queue.appendleft(j)
