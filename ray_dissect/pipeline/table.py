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
from ray_dissect.pipeline.context import JobContext, Plan
from ray_dissect.pipeline.stages import (
    activations,
    attribution,
    concept_blackout,
    concepts,
    masking,
    prism,
    ranges_importance,
    receptive_fields,
    scoring,
    threshold_sweep,
    thresholds,
    top_images,
    unit_ablation,
    unit_attribution,
)
from ray_dissect.spec import SCHEDULING_FIELDS, ClusteredMethod, JobSpec
from ray_dissect.spec.base import digest, hashed_data

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
            covers these and those of every earlier stage that owns nothing), or ``None`` for
            the whole spec except the sections other stages own.
        owns: top-level spec sections only this stage depends on. Such a stage is a leaf:
            no other stage's hash covers its section or its ``covers``, so changing the
            section redoes this stage alone.
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
    out: dict[str, Any] = {"quantile": data["method"].get("quantile")}
    if isinstance(spec.method, ClusteredMethod):
        out |= {"clusters": spec.method.clusters, "seed": spec.method.seed}
    return out


def _top_image_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    method = spec.method
    return {"top_images": hashed_data(spec.top_images), "kind": method.kind,
            "bounds": getattr(method, "bounds", None)}


def _attribution_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    section = spec.analyses.attribution
    return {"attribution": hashed_data(section) if section else None}


def _receptive_field_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    section = spec.analyses.receptive_fields
    if section is None:
        return {"receptive_fields": None}
    fields = hashed_data(section)
    fields.pop("image_maps", None)  # an extra output from the same parts: no occlusion redone
    return {"receptive_fields": fields}


def _unit_attribution_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    section = spec.analyses.unit_attribution
    return {"unit_attribution": section.model_dump(mode="json") if section else None}


def _prism_pca_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    section = spec.analyses.prism
    if section is None:
        return {"prism_pca": None}
    return {"prism_pca": {"layer": section.layer, "ge_layers": prism.ge_layers(section),
                          "limit": section.limit}}


def _prism_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    section = spec.analyses.prism
    return {"prism": section.model_dump(mode="json") if section else None}


def _sweep_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    sweep = spec.studies.threshold_sweep
    return {"threshold_sweep": sweep.model_dump(mode="json") if sweep else None,
            "method": data["method"]}


def _section(spec: JobSpec, name: str) -> dict[str, Any] | None:
    section = getattr(spec.studies, name)
    return section.model_dump(mode="json") if section is not None else None


def _importance_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"ranges_importance": _section(spec, "ranges_importance"),
            "bounds": getattr(spec.method, "bounds", None)}


def _label_inputs(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    """The method fields the NetDissect labels and IoUs depend on beyond the thresholds (the
    search's fields do not change them)."""
    return {name: data["method"].get(name) for name in fields}


def _ablation_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"unit_ablation": _section(spec, "unit_ablation"),
            "labels": _label_inputs(data, "denominator", "iou_threshold")}


def _blackout_iou_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"concept_blackout": spec.studies.concept_blackout is not None,
            "labels": _label_inputs(data, "denominator")}


def _blackout_inputs(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    return {"concept_blackout": _section(spec, "concept_blackout"),
            "labels": _label_inputs(data, "denominator")}


STAGES: tuple[Stage, ...] = (
    Stage("concepts", "tasks", concepts.concept_work, ("concepts.zarr", "concepts"),
          _concept_inputs, concepts.plan, concepts.collect, concepts.finish),
    Stage("activations", "actors", activations.extraction_work,
          ("activations.zarr", "activations"), _activation_inputs, activations.plan,
          activations.collect, activations.finish, calls_per_actor=2,
          timings=activations.timings),
    Stage("attribution", "actors", attribution.attribution_work, ("attribution.zarr",),
          _attribution_inputs, attribution.plan, attribution.collect, attribution.finish,
          owns=("analyses",)),
    Stage("prism_pca", "actors", prism.pca_work, ("prism",), _prism_pca_inputs, prism.pca_plan,
          prism.pca_collect, prism.pca_finish, owns=("analyses",)),
    Stage("prism", "actors", prism.maps_work, ("prism.zarr",), _prism_inputs, prism.plan,
          prism.collect, prism.finish, owns=("analyses",)),
    Stage("thresholds", "tasks", thresholds.block_work, ("thresholds",), _threshold_inputs,
          thresholds.plan, thresholds.collect, thresholds.finish),
    Stage("scoring", "tasks", scoring.block_work, ("parts", "records"), None, scoring.plan,
          scoring.collect, scoring.finish),
    Stage("masking", "actors", masking.masking_work, (), None, masking.plan, masking.collect,
          masking.finish),
    Stage("top_images", "tasks", top_images.block_work, ("top_images",), _top_image_inputs,
          top_images.plan, top_images.collect, top_images.finish, owns=("top_images",)),
    Stage("receptive_fields", "actors", receptive_fields.rf_work,
          ("receptive_fields.zarr", "receptive_fields"), _receptive_field_inputs,
          receptive_fields.plan, receptive_fields.collect, receptive_fields.finish,
          owns=("analyses",)),
    Stage("unit_attribution", "actors", unit_attribution.unit_attribution_work,
          ("unit_attribution",), _unit_attribution_inputs, unit_attribution.plan,
          unit_attribution.collect, unit_attribution.finish, owns=("analyses",)),
    Stage("threshold_sweep", "tasks", threshold_sweep.block_work,
          ("studies/threshold_sweep", "studies/threshold_sweep.jsonl"), _sweep_inputs,
          threshold_sweep.plan, threshold_sweep.collect, threshold_sweep.finish,
          owns=("studies",)),
    Stage("ranges_importance", "actors", ranges_importance.importance_work,
          ("studies/ranges_importance", "studies/ranges_importance.jsonl"), _importance_inputs,
          ranges_importance.plan, ranges_importance.collect, ranges_importance.finish,
          owns=("studies",)),
    Stage("unit_ablation", "actors", unit_ablation.ablation_work,
          ("studies/unit_ablation", "studies/unit_ablation.jsonl"), _ablation_inputs,
          unit_ablation.plan, unit_ablation.collect, unit_ablation.finish, owns=("studies",)),
    Stage("concept_blackout_iou", "tasks", concept_blackout.iou_work,
          ("studies/concept_blackout_iou",), _blackout_iou_inputs, concept_blackout.iou_plan,
          concept_blackout.iou_collect, concept_blackout.iou_finish, owns=("studies",)),
    Stage("concept_blackout", "actors", concept_blackout.blackout_work,
          ("studies/concept_blackout", "studies/concept_blackout.jsonl"), _blackout_inputs,
          concept_blackout.plan, concept_blackout.collect, concept_blackout.finish,
          owns=("studies",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def _whole_spec(data: dict[str, Any], owner: Stage) -> dict[str, Any]:
    owned = {section for s in STAGES if s is not owner for section in s.owns}
    return {k: v for k, v in data.items() if k not in owned}


def stage_hashes(spec: JobSpec) -> dict[str, str]:
    """Hash, per stage in table order, of everything that stage's output depends on.

    A stage with ``covers`` hashes its own fields and those of every earlier stage that owns
    nothing (stages that own a section are leaves); a stage with ``covers=None`` hashes the
    whole spec without the sections other stages own (the spec hash when none is used). So a
    stage's hash changes exactly when something its output depends on changes.
    """
    data = spec.hash_data()
    inputs: dict[str, Any] = {}
    out: dict[str, str] = {}
    for s in STAGES:
        if s.covers is None:
            out[s.name] = digest(_whole_spec(data, s))
            continue
        mine = inputs | s.covers(data, spec)
        out[s.name] = digest(mine)
        if not s.owns:
            inputs = mine
    return out


def stale_stages(old: Manifest, spec: JobSpec) -> list[str]:
    """The stages whose inputs changed between ``old`` and ``spec`` (hash differs or the
    stage is new), in table order; since a hash covers everything its stage depends on, a
    stage downstream of a changed one is stale exactly when it depends on the change."""
    new = stage_hashes(spec)
    return [s.name for s in STAGES
            if old.stages.get(s.name) is None or old.stages[s.name].hash != new[s.name]]


def job_manifest(spec: JobSpec, version: str) -> Manifest:
    """A new manifest for ``spec``: every stage of the table pending, with its hash."""
    return new_manifest(spec.spec_hash(), stage_hashes(spec), version)
