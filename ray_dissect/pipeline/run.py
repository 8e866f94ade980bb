"""Running a job: walk the stage table (:func:`~ray_dissect.pipeline.table.stages`), hand
each stage's work units to an executor.

The executor decides where work units run: :mod:`ray_dissect.runtime.driver` sends them to
Ray actors and tasks; :func:`execute_locally` runs them in this process (tests, small jobs,
debugging). Both produce the same job directory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

from ray_dissect import __version__, storage
from ray_dissect.errors import StoreError
from ray_dissect.job.layout import JobDir
from ray_dissect.job.lock import job_lock
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

log = logging.getLogger(__name__)
OnDone = Callable[[int, Any], None]
Executor = Callable[[Stage, Plan, JobContext, OnDone], None]


def execute_on(device: str) -> Executor:
    """:func:`execute_locally` with the model replica, and the stages that compute on an
    actor's device (scoring's masks), on ``device`` (e.g. ``"cuda"``)."""
    return functools.partial(execute_locally, device=device)


def execute_locally(stage: Stage, plan: Plan, ctx: JobContext, on_done: OnDone,
                    device: str = "cpu") -> None:
    """Run every call of ``plan`` in this process (one model replica, on ``device``).

    Calls go in order; a stage with ``calls_per_actor`` above 1 keeps that many in flight
    in threads, as an actor would, and ``on_done`` runs here, in completion order. The
    extraction pipeline's threads are stopped when the stage's calls are done; the one-off
    builds (dataset, model) go in the stage's timings.
    """
    env = ctx.parts.setdefault("local_env", WorkEnv(ctx.spec, ctx.job, device))
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
    ctx.stage_hash = tracker.manifest.stages[stage.name].hash
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
    except BaseException:
        _best_effort(tracker.record_all, ctx.timings)  # the stage's error is the one to show
        raise
    else:
        tracker.record_all(ctx.timings)
    finally:
        ctx.timings.clear()


def _best_effort(write: Callable[..., None], *args: Any) -> None:
    """Write bookkeeping while a run fails: a failure to write (e.g. the disk that failed the
    run is still full) is logged, so that it does not hide the run's own error."""
    try:
        write(*args)
    except StoreError as failed:
        log.warning("could not update the manifest: %s", failed)


def run_stages(spec: JobSpec, out: str | Path | AnyPath, execute: Executor = execute_locally,
               *, progress: Progress | None = None, force: bool = False,
               session: Callable[[], AbstractContextManager[Any]] = nullcontext
               ) -> JobSummary:
    """Run (or resume) a whole job into ``out``; return its summary (also summary.json).

    The dataset, the model and the job directory are checked before ``session`` (e.g. a Ray
    connection or a local cluster's start-up) opens: a layer typo is refused in seconds. A
    failed check creates nothing. Work units finished by an earlier run of
    the same spec in ``out`` are not redone; the manifest records each run and whether it
    finished.
    """
    age, t0 = process_age(), time.perf_counter()
    dataset = check_dataset(spec)
    opened = time.perf_counter() - t0
    with ExitStack() as held:
        with ExitStack() as stack:
            spec, shapes, job, manifest, startup = _open(
                spec, len(dataset), out, force, session, stack, held)
            startup["preflight"] += opened
            run = start_run(manifest)
            tracker = Tracker(job.root, manifest, progress or QuietProgress())
            _record_startup(tracker, age, startup)
            provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(),
                                    package_version=__version__)
            ctx = JobContext(spec, job, dataset, shapes, provenance)
            try:
                summary = _run_all(ctx, tracker, execute, stack)
            except BaseException as err:
                _record_failure(job, manifest, err)
                raise
        run.status, run.finished = "finished", time.time()
        write_manifest(job.root, manifest)
    return summary


def _run_all(ctx: JobContext, tracker: Tracker, execute: Executor, stack: ExitStack
             ) -> JobSummary:
    """Every stage in order, then close ``stack`` (the session) and write the results."""
    for stage in stages():
        _run_stage(stage, ctx, tracker, execute)
    closing = time.perf_counter()
    stack.close()
    tracker.record("ray_shutdown", time.perf_counter() - closing)
    with tracker.timed("results"):
        return write_summary(ctx, tracker.manifest)


def _record_failure(job: JobDir, manifest: Manifest, err: BaseException) -> None:
    """Mark the latest run ``interrupted`` (Ctrl-C) or ``failed`` (with its error)."""
    run = manifest.runs[-1]
    if isinstance(err, KeyboardInterrupt):
        run.status, run.error = "interrupted", "interrupted by Ctrl-C"
    else:
        run.status, run.error = "failed", f"{type(err).__name__}: {err}"
    run.finished = time.time()
    _best_effort(write_manifest, job.root, manifest)


def _open(spec: JobSpec, images: int, out: str | Path | AnyPath, force: bool,
          session: Callable[[], AbstractContextManager[Any]], stack: ExitStack,
          held: ExitStack
          ) -> tuple[JobSpec, dict[str, tuple[int, ...]], JobDir, Manifest, dict[str, float]]:
    """Check the model (before any session: never overlapped with Ray's start-up), lock the
    job directory (on ``held``: :mod:`ray_dissect.job.lock`), remove the temporaries killed
    writers left, prepare it, then open ``session``. Returns the checked
    spec, the layer shapes, the job directory, its manifest and the seconds of ``preflight``
    (the model's part), ``prepare`` and ``ray_init``."""
    root = storage.location(out)
    locked = _exists(root)  # an existing DIR is locked at once: a busy one is refused
    if locked:              # before Ray starts; a new one only once the checks passed
        held.enter_context(job_lock(root, "run"))
    spec, shapes, startup = _check_model(spec, images)
    t0 = time.perf_counter()
    if not locked:
        held.enter_context(job_lock(root, "run"))
    for stale in storage.remove_temporaries(root):
        log.warning("removed %s, a temporary file a killed run left in %s", stale, root)
    job, manifest = prepare_job_dir(spec, root, force)
    startup["prepare"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    stack.enter_context(session())
    startup["ray_init"] = time.perf_counter() - t1
    return spec, shapes, job, manifest, startup


def _exists(root: AnyPath) -> bool:
    """Whether the job directory exists (unreachable counts as not: the lock says why)."""
    try:
        return bool(root.exists())
    except OSError:
        return False


def _check_model(spec: JobSpec, images: int
                 ) -> tuple[JobSpec, dict[str, tuple[int, ...]], dict[str, float]]:
    """:func:`~ray_dissect.pipeline.prepare.check_model` and its seconds (``preflight``)."""
    t0 = time.perf_counter()
    checked, shapes = check_model(spec, images)
    return checked, shapes, {"preflight": time.perf_counter() - t0}


def _record_startup(tracker: Tracker, age: float | None, seconds: dict[str, float]) -> None:
    """The run's costs before its first stage, in this order: the process's age when the run
    began (``process``: interpreter start-up and imports for the CLI), checking the spec
    against the dataset and the model (``preflight``: parsing the dataset index, building the
    model, probing its layers), preparing the job directory (``prepare``) and opening the Ray
    session (``ray_init``)."""
    order = ("preflight", "prepare", "ray_init")
    tracker.record_all(({"process": age} if age is not None else {})
                       | {key: seconds[key] for key in order})
