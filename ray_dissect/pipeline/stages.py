"""The stage table: every stage of a job, declared once.

Each :class:`Stage` names its work-unit function (run remotely, on model actors or CPU tasks),
what it writes in the job directory, which spec fields its output depends on, and its three
driver-side steps. The runtime's driver walks :data:`STAGES` in order; the manifest's stage
hashes, ``--force`` (which outputs to remove) and ``status`` (which rows to show) read it too.
Adding a stage is one entry here plus its module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ray_dissect.job.manifest import Manifest, new_manifest
from ray_dissect.pipeline import activations, concepts, masking, scoring, thresholds
from ray_dissect.pipeline.context import JobContext, Plan
from ray_dissect.spec import SCHEDULING_FIELDS, ClusteredMethod, JobSpec
from ray_dissect.spec.base import digest

Covers = Callable[[dict[str, Any], JobSpec], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One stage of a job.

    Attributes:
        name: the stage's name (manifest key, ``status`` row, progress bar).
        runs_on: ``"actors"`` (model replicas, a GPU each where there is one) or ``"tasks"``.
        work: the work-unit function, ``work(env, *plan.shared, *call)``; pure, no Ray.
        outputs: what the stage writes, relative to the job directory (``--force`` removes
            these when the stage's inputs changed).
        covers: the spec fields the stage's output depends on beyond earlier stages' (its hash
            covers these and every earlier stage's), or ``None`` for the whole spec except
            what later stages own.
        owns: top-level spec sections that only this stage and later ones depend on (left
            out of the hash of earlier whole-spec stages, so changing them redoes only this
            stage on).
        plan: driver side, before the work: which work units are still to do (``None`` when
            this job's method does not use the stage).
        collect: driver side, as each call returns: store its result; returns the number of
            work units it finished.
        finish: driver side, after the work: load the stage's outputs into the context;
            returns the number of bad samples the stage found.
        calls_per_actor: calls kept in flight per model actor (``runs_on="actors"``); above
            1 the work function must be thread-safe (the actor runs them in threads).
        timings: seconds per step of a call's work (e.g. decode, forward, write), taken from
            its result; the driver sums them per stage into the manifest (``status`` shows
            them). ``None``: the stage reports none.
    """

    name: str
    runs_on: Literal["actors", "tasks"]
    work: Callable[..., Any]
    outputs: tuple[str, ...]
    covers: Covers | None
    plan: Callable[[JobContext], Plan | None]
    collect: Callable[[JobContext, Any, Any], int]
    finish: Callable[[JobContext], int]
    owns: tuple[str, ...] = ()
    calls_per_actor: int = 1
    timings: Callable[[Any], dict[str, float]] | None = None


def _resources(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data["resources"].items() if k not in SCHEDULING_FIELDS}


def _concept_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"dataset": data["dataset"], "shard_images": _resources(data)["shard_images"]}


def _activation_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    res = _resources(data)
    later = {"gpu_decode": res["gpu_decode"]} if "gpu_decode" in res else {}  # set: hashed
    return {"model": data["model"], "layers": data["layers"], "batch": res["batch_size"],
            "threads": res["threads_per_actor"], "gpus": res["gpus_per_actor"], **later}


def _threshold_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"quantile": data["method"]["quantile"]}
    if isinstance(spec.method, ClusteredMethod):
        out |= {"clusters": spec.method.clusters, "seed": spec.method.seed}
    return out


STAGES: tuple[Stage, ...] = (
    Stage("concepts", "tasks", concepts.concept_work, ("concepts.zarr", "concepts"),
          _concept_inputs, concepts.plan, concepts.collect, concepts.finish),
    Stage("activations", "actors", activations.extraction_work,
          ("activations.zarr", "activations"), _activation_inputs, activations.plan,
          activations.collect, activations.finish, calls_per_actor=2,
          timings=activations.timings),
    Stage("thresholds", "tasks", thresholds.block_work, ("thresholds",), _threshold_inputs,
          thresholds.plan, thresholds.collect, thresholds.finish),
    Stage("scoring", "tasks", scoring.block_work, ("parts", "records"), None, scoring.plan,
          scoring.collect, scoring.finish),
    Stage("masking", "actors", masking.masking_work, (), None, masking.plan, masking.collect,
          masking.finish),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def _whole_spec(data: dict[str, Any], later: list[Stage]) -> dict[str, Any]:
    owned = {section for s in later for section in s.owns}
    return {k: v for k, v in data.items() if k not in owned}


def stage_hashes(spec: JobSpec) -> dict[str, str]:
    """Hash, per stage in table order, of everything that stage's output depends on: its own
    ``covers`` and every earlier stage's, or (``covers=None``) the hashed spec without the
    sections later stages own (which is the spec hash when no later section is used)."""
    data = spec.hash_data()
    inputs: dict[str, Any] = {}
    out: dict[str, str] = {}
    for i, s in enumerate(STAGES):
        if s.covers is None:
            out[s.name] = digest(_whole_spec(data, list(STAGES[i + 1:])))
        else:
            inputs |= s.covers(data, spec)
            out[s.name] = digest(inputs)
    return out


def stale_stages(old: Manifest, spec: JobSpec) -> list[str]:
    """The stages whose inputs changed between ``old`` and ``spec`` (and every later one)."""
    new = stage_hashes(spec)
    for i, s in enumerate(STAGES):
        if old.stages.get(s.name) is None or old.stages[s.name].hash != new[s.name]:
            return list(STAGE_NAMES[i:])
    return []


def job_manifest(spec: JobSpec, version: str) -> Manifest:
    """A new manifest for ``spec``: every stage of the table pending, with its hash."""
    return new_manifest(spec.spec_hash(), stage_hashes(spec), version)
