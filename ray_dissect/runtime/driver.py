"""The driver: runs a job's stages on Ray (see :func:`ray_dissect.pipeline.run.run_stages`).

The stages are those of :data:`ray_dissect.pipeline.table.STAGES`, in its order (concepts,
activations, the analyses, thresholds, scoring, masking, top images, receptive fields, the
studies), then the records and summary. This module only says where work units run: a stage
with ``runs_on="actors"`` goes to the model-replica actors, the others to tasks.
The model actors are kept from one actor stage to the next (spawned and loaded once). Before
a CPU stage, when the actors hold the CPUs its tasks would need and could run as many of its
work units at once themselves (e.g. 2 actors on a 2-core machine), the stage's work units
run on the actors (warm processes that imported torch and zarr already: a fresh CPU worker
pays for its imports again); when ending them would let more tasks run, they are ended; they
are ended at the end of the run in any case. Either way a work unit's result is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray_dissect.job.progress import Progress
from ray_dissect.pipeline.context import JobContext, Plan, spec_blob
from ray_dissect.pipeline.run import OnDone, run_stages
from ray_dissect.pipeline.stage import Stage
from ray_dissect.pipeline.table import STAGES
from ray_dissect.records.schema import JobSummary
from ray_dissect.runtime.actors import ActorPool, run_on_actors
from ray_dissect.runtime.cluster import gpus_per_actor, ray_session
from ray_dissect.runtime.tasks import run_tasks, stage_task
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath

ACTOR_CONCURRENCY = max(s.calls_per_actor for s in STAGES if s.runs_on == "actors")


class RayExecutor:
    """Runs each stage's plan on Ray: actor stages on one :class:`ActorPool` for the whole
    run, the others as CPU tasks. Shared arguments go to the object store once per stage,
    the concept index (set once by the concepts stage) once per run, however many stages
    share it (scoring, masking, the studies).
    """

    def __init__(self) -> None:
        self.pool: ActorPool | None = None
        self._puts: dict[int, tuple[Any, Any]] = {}

    def __call__(self, stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone) -> None:
        shared = tuple(self._put(x, once=x is ctx.index) for x in plan.shared)
        if on_model_actors(stage, self._gpus(ctx)):
            run_on_actors(self._pool(ctx), stage.name, [(*shared, *call) for call in plan.calls],
                          on_done, stage.calls_per_actor, ctx.timings)
            return
        if self._actors_serve(ctx.spec.resources.cpus_per_task, len(plan.calls)):
            assert self.pool is not None
            run_on_actors(self.pool, stage.name, [(*shared, *call) for call in plan.calls],
                          on_done, self.pool.cpu_calls, ctx.timings)
            return
        spec = ctx.spec
        head: tuple[Any, ...] = (stage.name, spec_blob(spec), str(ctx.job.root), *shared)
        run_tasks(stage_task, [(*head, *call) for call in plan.calls],
                  spec.resources.cpus_per_task, f"{stage.name} work unit",
                  _unpacking(stage.name, on_done, ctx.timings), name=f"{stage.name}_task")

    def _put(self, value: Any, once: bool) -> Any:
        """``value``'s object reference; with ``once``, put only the first time this object
        is shared (held with its reference, so its id is not reused)."""
        import ray

        if not once:
            return ray.put(value)
        if id(value) not in self._puts:
            self._puts[id(value)] = (value, ray.put(value))
        return self._puts[id(value)][1]

    @staticmethod
    def _gpus(ctx: JobContext) -> float:
        """GPUs per model actor of this job (``auto`` resolved on the cluster)."""
        return gpus_per_actor(ctx.spec.resources.gpus_per_actor)

    def _pool(self, ctx: JobContext) -> ActorPool:
        if self.pool is None:
            res = ctx.spec.resources
            self.pool = ActorPool(ctx.spec, ctx.job, gpus_per_actor(res.gpus_per_actor),
                                  ACTOR_CONCURRENCY)
        return self.pool

    def _actors_serve(self, cpus: float, calls: int) -> bool:
        """Whether a CPU stage of ``calls`` work units (``cpus`` each as tasks) runs on the live
        model actors (see :func:`cpu_stage_route`); ends them when that lets more tasks run."""
        import ray

        if self.pool is None or not self.pool.actors:
            return False
        route = cpu_stage_route(ray.available_resources().get("CPU", 0.0),
                                ray.cluster_resources().get("CPU", 0.0), cpus, calls,
                                len(self.pool.actors) * self.pool.cpu_calls)
        if route == "release":
            self.pool.release()
        return route == "actors"

    def close(self) -> None:
        """End the model actors; drop the shared objects."""
        if self.pool is not None:
            self.pool.release()
        self._puts.clear()


def on_model_actors(stage: Stage, gpus: float) -> bool:
    """Whether ``stage``'s work units run on the model actors when each holds ``gpus`` GPUs:
    an actor stage always; a tasks stage declared ``on_gpus`` (thresholds, scoring) when the
    actors hold GPUs, so its work takes their device; any other tasks stage never (it may still
    borrow idle CPU actors, see :func:`cpu_stage_route`)."""
    return stage.runs_on == "actors" or (stage.on_gpus and gpus > 0)


def cpu_stage_route(free: float, total: float, cpus: float, calls: int, actor_slots: int
                    ) -> str:
    """Where a CPU stage of ``calls`` work units of ``cpus`` CPUs each runs while model actors
    with ``actor_slots`` CPU work-unit slots in all hold ``total - free`` of the cluster's
    ``total`` CPUs: ``"tasks"`` beside them when the free CPUs run as many units at once as
    the whole cluster would; else ``"actors"`` when the actors' slots run as many; else
    ``"release"`` (end the actors, then tasks)."""
    wanted = min(calls, total // cpus)
    if wanted <= free // cpus:
        return "tasks"
    return "actors" if actor_slots >= wanted else "release"


def _unpacking(name: str, on_done: OnDone, timings: dict[str, float]) -> OnDone:
    """``on_done`` for :func:`stage_task` results: the value goes on, the task's seconds are
    summed into ``timings`` as ``NAME.KEY``."""
    def unpack(i: int, result: tuple[Any, dict[str, float]]) -> None:
        value, seconds = result
        for key, s in seconds.items():
            timings[f"{name}.{key}"] = timings.get(f"{name}.{key}", 0.0) + s
        on_done(i, value)

    return unpack


def execute_on_ray(stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone) -> None:
    """Run one stage's plan on Ray with actors of its own (ended after the stage)."""
    executor = RayExecutor()
    try:
        executor(stage, plan, ctx, on_done)
    finally:
        executor.close()


def run_job(spec: JobSpec, out: str | Path | AnyPath, *, address: str | None = None,
            progress: Progress | None = None, force: bool = False) -> JobSummary:
    """Run (or resume) a whole job into ``out`` on Ray; return its summary (also summary.json).

    ``out`` is a local directory or an fsspec URI (:mod:`ray_dissect.storage`). A running Ray
    session is reused, else ``address`` is joined or a local cluster started. Work units
    finished by an earlier run of the same spec in ``out`` are not redone.
    """
    executor = RayExecutor()

    @contextmanager
    def session() -> Iterator[None]:
        with ray_session(address, spec.resources.actors):
            try:
                yield
            finally:
                executor.close()

    return run_stages(spec, out, executor, progress=progress, force=force, session=session)
