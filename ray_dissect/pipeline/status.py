"""``ray-dissect status DIR``: per-stage progress of a job directory, from its manifest, the
time breakdown of the stages that record one (extraction: decode, forward, copy, write, wait
seconds summed over its shards) and the latest run's fixed costs (start-up: process, preflight,
prepare, Ray start-up; per stage: plan, time to the first result, actor spawn and model load,
finish)."""

from __future__ import annotations

import os
import socket
import time

from ray_dissect import storage
from ray_dissect.errors import StoreError
from ray_dissect.job.lock import describe, read_holder
from ray_dissect.job.manifest import Manifest, RunInfo, read_manifest
from ray_dissect.pipeline.table import stage, stage_names
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath


def stage_used(name: str, spec: JobSpec) -> bool:
    """Whether a job of ``spec`` runs stage ``name``, as the stage declares (``Stage.used``;
    a stage that declares nothing runs in every job)."""
    used = stage(name).used
    return used is None or used(spec)


def used_stages(root: AnyPath) -> tuple[str, ...]:
    """The stages the job in ``root`` runs, in order (every stage without a readable
    ``spec.json``)."""
    try:
        spec = JobSpec.model_validate_json(storage.read_text(root / "spec.json"))
    except (FileNotFoundError, ValueError):
        return stage_names()
    return tuple(name for name in stage_names() if stage_used(name, spec))


def _alive(run: RunInfo) -> str:
    """'running' only if the run's process still exists on this host."""
    if run.status != "running":
        return run.status
    if run.host != socket.gethostname():
        return f"running on {run.host}?"
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return "interrupted (process gone)"
    except PermissionError:
        pass
    return "running"


def render_status(root: AnyPath) -> str:
    """A plain-text table of the job's stages and latest run."""
    manifest = read_manifest(root)
    if manifest is None:
        raise StoreError(f"{str(root)!r} has no manifest.json",
                         hint="give the --out directory of a `ray-dissect run`")
    lines = [f"job {root}  spec {manifest.spec_hash}  ray_dissect {manifest.package_version}"]
    if manifest.runs:
        run = manifest.runs[-1]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started))
        lines.append(f"latest run: {_alive(run)} (started {when}, pid {run.pid}, "
                     f"{len(manifest.runs)} run(s))" + (f": {run.error}" if run.error else ""))
    holder = read_holder(root)
    if holder is not None:
        lines.append(f"locked by {describe(holder)}")
    names = used_stages(root)
    w = max(len(name) for name in names)
    lines.append(f"{'stage':<{w}} {'state':<8} {'done/total':>12} {'this run':>9} "
                 f"{'seconds':>9} {'bad':>5}")
    for name in names:
        st = manifest.stages.get(name)
        if st is None:  # a stage added after this directory was written
            lines.append(f"{name:<{w}} {'-':<8} {'-':>12} {'-':>9} {'-':>9} {'-':>5}")
            continue
        lines.append(f"{name:<{w}} {st.state:<8} {f'{st.done}/{st.total}':>12} "
                     f"{st.computed:>9} {st.seconds:>9.1f} {st.errors:>5}")
    return "\n".join(lines + _breakdowns(manifest) + _timings(manifest))


def _breakdowns(manifest: Manifest) -> list[str]:
    """One line per stage with a time breakdown: seconds per step, summed over work units."""
    rows = [f"{name:<12} " + "  ".join(f"{step} {seconds:.1f}" for step, seconds in
                                       st.breakdown.items())
            for name, st in manifest.stages.items() if st.breakdown]
    if not rows:
        return []
    return ["time breakdown (seconds summed over work units; decode over its threads):", *rows]


def _timings(manifest: Manifest) -> list[str]:
    """The latest run's fixed costs: one line for the run-wide ones, one per stage."""
    if not manifest.runs or not manifest.runs[-1].timings:
        return []
    rows: dict[str, list[str]] = {}
    for key, seconds in manifest.runs[-1].timings.items():
        group, _, step = key.rpartition(".")
        rows.setdefault(group or "run", []).append(f"{step} {seconds:.2f}")
    w = max(len(group) for group in rows)
    return ["fixed costs of the latest run (seconds; start = until the first result):",
            *(f"{group:<{w}} " + "  ".join(steps) for group, steps in rows.items())]
