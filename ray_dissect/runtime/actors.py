"""Model-replica actors, fed work units dynamically (extraction, concept masking)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ray_dissect.errors import RayDissectError, StageError
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.context import WorkEnv, spec_blob
from ray_dissect.pipeline.table import stage
from ray_dissect.spec import JobSpec
from ray_dissect.storage.files import UNWRITABLE, unwritable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


def raise_cause(err: Any, what: str) -> None:
    """Re-raise a remote failure: our own errors as themselves, a full or read-only disk as
    StoreError (the exit code of unwritable output, as in-process), anything else as
    StageError."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, RayDissectError):
        raise cause from None
    if isinstance(cause, OSError) and cause.errno in UNWRITABLE:
        raise unwritable(what, cause, name_file=True) from None
    raise StageError(f"{what} failed: {cause!r}",
                     hint="see the Ray logs above; rerun the same command to resume") from err


class ModelActor:
    """Holds one model replica (built on first use) and the dataset reader; runs any stage's
    work units on request: every actor stage of a run, and the CPU stages when the actors
    hold the CPUs (see :mod:`ray_dissect.runtime.driver`)."""

    def __init__(self, spec: bytes, job_root: str, device: str, requested: float) -> None:
        self.timings = {"actor_spawn": time.time() - requested}
        self.env = WorkEnv.from_blob(spec, job_root, device)

    def run(self, name: str, *args: Any) -> Any:
        """Run one work unit of stage ``name``: ``work(env, *args)``."""
        return stage(name).work(self.env, *args)

    def end_stage(self) -> dict[str, float]:
        """Stop the stage's threads (the extraction pipeline's); return this actor's one-off
        costs since the last call: ``actor_spawn`` (request to constructor: scheduling,
        process start, imports) once, then ``model_load`` and ``dataset_open`` when built."""
        self.env.close()
        out, self.timings = self.timings | self.env.drain_timings(), {}
        return out


class ActorPool:
    """The job's model actors, started on first need and kept from one actor stage to the
    next (so each replica is spawned and loads its model once per run, not once per stage);
    :meth:`release` ends them (before CPU tasks that need their CPUs, and at the end)."""

    def __init__(self, spec: JobSpec, job: JobDir, gpus: float, concurrency: int) -> None:
        import ray

        res = spec.resources
        self.remote_cls = ray.remote(ModelActor).options(
            num_cpus=res.cpus_per_actor, num_gpus=gpus, resources=dict(res.actor_resources),
            max_restarts=0, max_concurrency=concurrency)
        self.args = (spec_blob(spec), str(job.root), "cuda" if gpus > 0 else "cpu")
        self.limit = res.actors
        self.cpu_calls = min(concurrency, int(res.cpus_per_actor // res.cpus_per_task))
        """CPU-stage work units an actor runs at once: as many as its CPUs hold tasks (0 when
        a task asks for more CPUs than an actor holds: those stages never run on actors)."""
        self.actors: list[Any] = []

    def take(self, n: int) -> list[Any]:
        """``n`` actors: those alive first, new ones started for the rest."""
        while len(self.actors) < n:
            self.actors.append(self._spawn())
        return self.actors[:n]

    def replace(self, dead: Any) -> Any:
        """A new actor in place of ``dead``."""
        self.actors[self.actors.index(dead)] = actor = self._spawn()
        return actor

    def end_stage(self, name: str, timings: dict[str, float]) -> None:
        """Stop the stage's threads in every actor; put the slowest actor's one-off costs in
        ``timings`` as ``NAME.KEY``. An actor that died since its last call is dropped (the
        next stage starts another)."""
        import ray

        refs = {a: a.end_stage.remote() for a in self.actors}
        for actor, ref in refs.items():
            try:
                got = ray.get(ref)
            except ray.exceptions.RayActorError:  # died after its last call: drop it
                self.actors.remove(actor)
                continue
            for key, seconds in got.items():
                timings[f"{name}.{key}"] = max(timings.get(f"{name}.{key}", 0.0), seconds)

    def release(self) -> None:
        """End every actor (their CPUs and GPUs go back to the cluster)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def _spawn(self) -> Any:
        return self.remote_cls.remote(*self.args, time.time())


def run_on_actors(pool: ActorPool, name: str, calls: list[tuple[Any, ...]],
                  on_done: Callable[[int, Any], None], per_actor: int,
                  timings: dict[str, float]) -> None:
    """Run work units of stage ``name`` (``ModelActor.run(name, *call)``) for every call on
    up to ``spec.resources.actors`` model actors of ``pool`` (kept alive afterwards).

    Calls are handed out to whichever actor has room, ``per_actor`` in flight on each (the
    actor then runs them in that many threads, so it can start the next while finishing the
    last), so a slow actor does not hold the others. When an actor dies, every call it held
    is redone (at most ``MAX_ATTEMPTS`` times per call) and the actor replaced once;
    ``on_done(i, result)`` runs on the driver as each call completes. The actors' one-off
    costs (spawn, model load) go in ``timings``.
    """
    import ray

    book = _Pool(name, calls, per_actor)
    for actor in pool.take(min(pool.limit, len(calls))):
        book.fill(actor)
    try:
        while book.inflight:
            ready, _ = ray.wait(list(book.inflight), num_returns=1)
            actor, i = book.inflight.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError as err:
                book.requeue(actor, i, err)
                log.warning("model actor died during %s %d; replacing it", name, i)
                actor = pool.replace(actor)
            except ray.exceptions.RayTaskError as err:
                raise_cause(err, f"{name} work unit {i}")
            else:
                on_done(i, result)
            book.fill(actor)
    except BaseException:
        pool.release()
        raise
    pool.end_stage(name, timings)


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
