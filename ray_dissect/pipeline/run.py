"""Running a job: walk the stage table, hand each stage's work units to an executor.

The executor decides where work units run: :mod:`ray_dissect.runtime.driver` sends them to
Ray actors and tasks; :func:`execute_locally` runs them in this process (tests, small jobs,
debugging). Both produce the same job directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from ray_dissect import __version__, storage
from ray_dissect.job.manifest import start_run, write_manifest
from ray_dissect.job.progress import Progress, QuietProgress, Tracker
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.prepare import preflight, prepare_job_dir
from ray_dissect.pipeline.results import write_results
from ray_dissect.pipeline.stages import STAGES, Stage
from ray_dissect.records.schema import JobSummary, Provenance
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath

OnDone = Callable[[int, Any], None]
Executor = Callable[[Stage, Plan, JobContext, OnDone], None]


def execute_locally(stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone) -> None:
    """Run every call of ``plan`` in this process, in order (one model replica, on CPU)."""
    env = ctx.parts.setdefault("local_env", WorkEnv(ctx.spec, ctx.job))
    for i, call in enumerate(plan.calls):
        on_done(i, stage.work(env, *plan.shared, *call))


def _run_stage(stage: Stage, ctx: JobContext, tracker: Tracker, execute: Executor) -> None:
    plan = stage.plan(ctx)
    if plan is None:
        tracker.skip(stage.name)
        return
    tracker.start(stage.name, plan.total, plan.done)
    if plan.calls:
        def on_done(i: int, result: Any) -> None:
            tracker.unit_done(stage.name, stage.collect(ctx, plan.calls[i], result))

        execute(stage, plan, ctx, on_done)
    tracker.finish(stage.name, stage.finish(ctx))


def run_stages(spec: JobSpec, out: str | Path | AnyPath, execute: Executor = execute_locally,
               *, progress: Progress | None = None, force: bool = False,
               session: Callable[[], AbstractContextManager[Any]] = nullcontext) -> JobSummary:
    """Run (or resume) a whole job into ``out``; return its summary (also summary.json).

    The spec is checked against the dataset and model before ``session`` (e.g. a Ray
    connection) opens. Work units finished by an earlier run of the same spec in ``out`` are
    not redone; the manifest records each run and whether it finished.
    """
    spec, dataset, shapes = preflight(spec)
    job, manifest = prepare_job_dir(spec, storage.location(out), force)
    run = start_run(manifest)
    tracker = Tracker(job.root, manifest, progress or QuietProgress())
    provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(), package_version=__version__)
    ctx = JobContext(spec, job, dataset, shapes, provenance)
    try:
        with session():
            for stage in STAGES:
                _run_stage(stage, ctx, tracker, execute)
        summary = write_results(ctx, manifest)
    except BaseException as err:
        run.status, run.error, run.finished = "failed", f"{type(err).__name__}: {err}", time.time()
        write_manifest(job.root, manifest)
        raise
    run.status, run.finished = "finished", time.time()
    write_manifest(job.root, manifest)
    return summary
