"""The driver: runs a job's stages on Ray (see :func:`ray_dissect.pipeline.run.run_stages`).

concepts (CPU tasks over image shards) -> activations (model actors over image shards) ->
thresholds (CPU tasks over unit blocks) -> scoring (CPU tasks over unit blocks) -> masking
(model actors, when asked) -> records and summary. This module only says where work units
run: a stage with ``runs_on="actors"`` goes to the model-replica actors, the others to tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray_dissect.job.progress import Progress
from ray_dissect.pipeline.context import JobContext, Plan
from ray_dissect.pipeline.run import OnDone, run_stages
from ray_dissect.pipeline.stages import Stage
from ray_dissect.records.schema import JobSummary
from ray_dissect.runtime.actors import run_on_actors
from ray_dissect.runtime.cluster import gpus_per_actor, ray_session
from ray_dissect.runtime.tasks import run_tasks, stage_task
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath


def execute_on_ray(stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone) -> None:
    """Run a plan's calls on the stage's workers; the shared arguments go to Ray once."""
    import ray

    shared = tuple(ray.put(x) for x in plan.shared)
    spec, res = ctx.spec, ctx.spec.resources
    if stage.runs_on == "actors":
        run_on_actors(spec, ctx.job, gpus_per_actor(res.gpus_per_actor), stage.name,
                      [(*shared, *call) for call in plan.calls], on_done,
                      per_actor=stage.calls_per_actor)
        return
    head: tuple[Any, ...] = (stage.name, spec.model_dump_json(), str(ctx.job.root), *shared)
    run_tasks(stage_task, [(*head, *call) for call in plan.calls], res.cpus_per_task,
              f"{stage.name} work unit", on_done, name=f"{stage.name}_task")


def run_job(spec: JobSpec, out: str | Path | AnyPath, *, address: str | None = None,
            progress: Progress | None = None, force: bool = False) -> JobSummary:
    """Run (or resume) a whole job into ``out`` on Ray; return its summary (also summary.json).

    ``out`` is a local directory or an fsspec URI (:mod:`ray_dissect.storage`). A running Ray
    session is reused, else ``address`` is joined or a local cluster started. Work units
    finished by an earlier run of the same spec in ``out`` are not redone.
    """
    return run_stages(spec, out, execute_on_ray, progress=progress, force=force,
                      session=lambda: ray_session(address))
