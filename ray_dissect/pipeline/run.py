"""Running a job: walk the stage table (:func:`~ray_dissect.pipeline.table.stages`), hand
each stage's work units to an executor.

The executor decides where work units run: :mod:`ray_dissect.runtime.driver` sends them to
Ray actors and tasks; :func:`execute_locally` runs them in this process (tests, small jobs,
debugging). Both produce the same job directory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

from ray_dissect import __version__, storage
from ray_dissect.job.layout import JobDir
from ray_dissect.job.manifest import Manifest, start_run, write_manifest
from ray_dissect.job.progress import Progress, QuietProgress, Tracker, process_age
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.prepare import check_dataset, check_model, prepare_job_dir
from ray_dissect.pipeline.stage import Stage
from ray_dissect.pipeline.summary import write_summary
from ray_dissect.pipeline.table import stages
from ray_dissect.records.schema import JobSummary, Provenance
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath

OnDone = Callable[[int, Any], None]
Executor = Callable[[Stage, Plan, JobContext, OnDone], None]


def execute_locally(stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone) -> None:
    """Run every call of ``plan`` in this process (one model replica, on CPU).

    Calls go in order; a stage with ``calls_per_actor`` above 1 keeps that many in flight
    in threads, as an actor would, and ``on_done`` runs here, in completion order. The
    extraction pipeline's threads are stopped when the stage's calls are done; the one-off
    builds (dataset, model) go in the stage's timings.
    """
    env = ctx.parts.setdefault("local_env", WorkEnv(ctx.spec, ctx.job))
    try:
        run_in_flight(lambda call: stage.work(env, *plan.shared, *call), plan.calls,
                      stage.calls_per_actor, on_done)
    finally:
        env.close()
        ctx.timings |= {f"{stage.name}.{k}": v for k, v in env.drain_timings().items()}


def run_in_flight(work: Callable[[tuple[Any, ...]], Any], calls: list[tuple[Any, ...]],
                  inflight: int, on_done: OnDone) -> None:
    """``on_done(i, work(calls[i]))`` for every call, at most ``inflight`` running at once
    (in threads when above 1); the first error is raised once running calls are done."""
    if inflight <= 1:
        for i, call in enumerate(calls):
            on_done(i, work(call))
        return
    with ThreadPoolExecutor(inflight, thread_name_prefix="call") as pool:
        todo = iter(enumerate(calls))
        running = {pool.submit(work, call): i for i, call in islice(todo, inflight)}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                on_done(running.pop(future), future.result())
                running |= {pool.submit(work, call): i for i, call in islice(todo, 1)}


def _run_stage(stage: Stage, ctx: JobContext, tracker: Tracker, execute: Executor) -> None:
    t0 = time.perf_counter()
    plan = stage.plan(ctx)
    if plan is None:
        tracker.skip(stage.name)
        return
    tracker.record(f"{stage.name}.plan", time.perf_counter() - t0)
    tracker.start(stage.name, plan.total, plan.done)
    if plan.calls:
        _execute(stage, plan, ctx, tracker, execute)
    with tracker.timed(f"{stage.name}.finish"):
        errors = stage.finish(ctx)
    tracker.finish(stage.name, errors)


def _execute(stage: Stage, plan: Plan, ctx: JobContext, tracker: Tracker,
             execute: Executor) -> None:
    """Run the plan's calls; record the time to the first result (``STAGE.start``: workers
    or actors starting, the model loading, and the first call's own work) and the
    executor's own timings."""
    started = [time.perf_counter()]

    def on_done(i: int, result: Any) -> None:
        if started:
            tracker.record(f"{stage.name}.start", time.perf_counter() - started.pop())
        timings = stage.timings(result) if stage.timings else None
        tracker.unit_done(stage.name, stage.collect(ctx, plan.calls[i], result), timings)

    try:
        execute(stage, plan, ctx, on_done)
    finally:
        tracker.record_all(ctx.timings)
        ctx.timings.clear()


def run_stages(spec: JobSpec, out: str | Path | AnyPath, execute: Executor = execute_locally,
               *, progress: Progress | None = None, force: bool = False,
               session: Callable[[], AbstractContextManager[Any]] = nullcontext,
               slow_session: bool = False) -> JobSummary:
    """Run (or resume) a whole job into ``out``; return its summary (also summary.json).

    The dataset, the model and the job directory are checked before ``session`` (e.g. a Ray
    connection) opens; with ``slow_session`` (a local Ray cluster starting) the model is
    checked while it opens (:func:`_check_model_meanwhile`), and a failed check ends the
    session again. A failed check creates nothing. Work units finished by an earlier run of
    the same spec in ``out`` are not redone; the manifest records each run and whether it
    finished.
    """
    age, t0 = process_age(), time.perf_counter()
    dataset = check_dataset(spec)
    opened = time.perf_counter() - t0
    with ExitStack() as stack:
        spec, shapes, job, manifest, startup = _open(spec, len(dataset), out, force, session,
                                                     slow_session, stack)
        startup["preflight"] += opened
        run = start_run(manifest)
        tracker = Tracker(job.root, manifest, progress or QuietProgress())
        _record_startup(tracker, age, startup)
        provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(),
                                package_version=__version__)
        ctx = JobContext(spec, job, dataset, shapes, provenance)
        try:
            for stage in stages():
                _run_stage(stage, ctx, tracker, execute)
            closing = time.perf_counter()
            stack.close()
            tracker.record("ray_shutdown", time.perf_counter() - closing)
            with tracker.timed("results"):
                summary = write_summary(ctx, manifest)
        except BaseException as err:
            run.status, run.error = "failed", f"{type(err).__name__}: {err}"
            run.finished = time.time()
            write_manifest(job.root, manifest)
            raise
    run.status, run.finished = "finished", time.time()
    write_manifest(job.root, manifest)
    return summary


def _open(spec: JobSpec, images: int, out: str | Path | AnyPath, force: bool,
          session: Callable[[], AbstractContextManager[Any]], slow_session: bool,
          stack: ExitStack) -> tuple[JobSpec, dict[str, tuple[int, ...]], JobDir, Manifest,
                                     dict[str, float]]:
    """Check the model (while ``session`` opens on ``stack`` when ``slow_session``), prepare
    the job directory, then open ``session`` if not yet open. Returns the checked spec, the
    layer shapes, the job directory, its manifest and the seconds of ``preflight`` (the
    model's part), ``prepare`` and ``ray_init``."""
    if slow_session:
        spec, shapes, startup = _check_model_meanwhile(spec, images, session, stack)
    else:
        spec, shapes, startup = _check_model(spec, images)
    t0 = time.perf_counter()
    job, manifest = prepare_job_dir(spec, storage.location(out), force)
    startup["prepare"] = time.perf_counter() - t0
    if not slow_session:
        t1 = time.perf_counter()
        stack.enter_context(session())
        startup["ray_init"] = time.perf_counter() - t1
    return spec, shapes, job, manifest, startup


def _check_model(spec: JobSpec, images: int
                 ) -> tuple[JobSpec, dict[str, tuple[int, ...]], dict[str, float]]:
    """:func:`~ray_dissect.pipeline.prepare.check_model` and its seconds (``preflight``)."""
    t0 = time.perf_counter()
    checked, shapes = check_model(spec, images)
    return checked, shapes, {"preflight": time.perf_counter() - t0}


def _check_model_meanwhile(spec: JobSpec, images: int,
                           session: Callable[[], AbstractContextManager[Any]],
                           stack: ExitStack
                           ) -> tuple[JobSpec, dict[str, tuple[int, ...]], dict[str, float]]:
    """Open ``session`` on ``stack`` here while a thread builds and checks the model
    (:func:`~ray_dissect.pipeline.prepare.check_model`: importing torch and torchvision,
    ~3 s, overlaps Ray's start-up, ~5 s, which mostly waits on Ray's own processes).

    Returns the checked spec, the layer shapes and the seconds of ``preflight`` (the model
    check) and ``ray_init`` (the session's opening); either's error is raised once both are
    over (the session is then ended by ``stack``); when both fail, the check's.
    """
    t0 = time.perf_counter()
    with ThreadPoolExecutor(1, thread_name_prefix="preflight") as pool:
        checking = pool.submit(_check_model, spec, images)
        try:
            stack.enter_context(session())
        except BaseException:
            if (error := checking.exception()) is not None:
                raise error from None  # the spec's error first: it needs no Ray to fix
            raise
        ray_init = time.perf_counter() - t0
        checked, shapes, seconds = checking.result()
    return checked, shapes, seconds | {"ray_init": ray_init}


def _record_startup(tracker: Tracker, age: float | None, seconds: dict[str, float]) -> None:
    """The run's costs before its first stage, in this order: the process's age when the run
    began (``process``: interpreter start-up and imports for the CLI), checking the spec
    against the dataset and the model (``preflight``: parsing the dataset index, building the
    model, probing its layers), preparing the job directory (``prepare``) and opening the Ray
    session (``ray_init``; with a slow session it overlaps the model's part of the
    preflight)."""
    order = ("preflight", "prepare", "ray_init")
    tracker.record_all(({"process": age} if age is not None else {})
                       | {key: seconds[key] for key in order})
