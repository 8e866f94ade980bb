"""CPU Ray tasks: any stage's work unit as a task, and a helper that runs a batch of them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ray_dissect.pipeline.context import task_env
from ray_dissect.pipeline.table import stage
from ray_dissect.runtime.actors import raise_cause


def stage_task(name: str, spec: bytes, job_root: str, *args: Any
               ) -> tuple[Any, dict[str, float]]:
    """Run one work unit of stage ``name`` (``work(env, *args)``) in this worker process;
    ``spec`` is :func:`~ray_dissect.pipeline.context.spec_blob`'s.

    Returns:
        the work unit's result, and its seconds: ``task_work`` (the task's whole run here)
        and the one-off costs of this worker's environment when it first built them
        (``dataset_open``, ``model_load``).
    """
    t0 = time.perf_counter()
    env = task_env(spec, job_root)
    result = stage(name).work(env, *args)
    return result, {"task_work": time.perf_counter() - t0, **env.drain_timings()}


def run_tasks(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], cpus: float,
              what: str, on_done: Callable[[int, Any], None], name: str | None = None) -> None:
    """Run ``fn(*args)`` for each call as Ray tasks; ``on_done(i, result)`` as each finishes.

    ``name`` names the tasks (``ray::<name>`` in process lists and the dashboard).

    System failures (a dead worker) are retried by Ray; an error raised by the work itself
    stops the stage with that error.
    """
    import ray

    remote = ray.remote(fn).options(num_cpus=cpus, max_retries=3, name=name or fn.__name__)
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
