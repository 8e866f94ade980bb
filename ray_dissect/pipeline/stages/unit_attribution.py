"""Stage ``unit_attribution``: which input pixels drive each chosen unit on its top images
(model actors, a block of units each; only with ``analyses.unit_attribution``).

Work unit: ``(block, units, images)`` -> ``unit_attribution/<layer>/<block>.npz`` holding
``units`` (U,) int64, ``images`` (U, k) int64 (the unit's first ``top_k`` top images, -1 where
it has fewer) and ``maps`` (U, k, H, W) float32 raw maps at the network's input resolution
(:func:`ray_dissect.visualize.methods.unit_attribution`; zeros where there is no image or it
is unreadable); the driver writes its done marker (stage hash and digest). Nothing is
merged: the report reads the parts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage, required_section, uses
from ray_dissect.spec import JobSpec
from ray_dissect.spec.analyses import UnitAttributionSpec
from ray_dissect.storage import AnyPath

Call = tuple[int, list[int], list[list[int]]]


def _spec(spec: JobSpec) -> UnitAttributionSpec:
    return required_section(spec, "analyses", "unit_attribution", UnitAttributionSpec)


def _unit_maps(env: WorkEnv, section: UnitAttributionSpec, unit: int, images: list[int]
               ) -> np.ndarray:
    """(k, H, W) float32 maps of one unit on its top images (zeros for missing ones)."""
    import torch

    from ray_dissect.visualize.methods import unit_attribution

    size = env.spec.model.preprocess.size
    out = np.zeros((section.top_k, size, size), np.float32)
    readable = []
    for j, index in enumerate(images):
        try:
            readable.append((j, env.dataset.read_image(index)))
        except BadSampleError:
            continue
    if not readable:
        return out
    x = torch.from_numpy(preprocess([im for _, im in readable], env.spec.model.preprocess))
    layer = env.model.get_submodule(section.layer)
    maps = unit_attribution(env.model.eval(), layer, x.to(env.device), unit, section.method,
                            section.steps)
    out[[j for j, _ in readable]] = maps.cpu().numpy()
    return out


def unit_attribution_work(env: WorkEnv, block: int, units: list[int],
                          images: list[list[int]]) -> int:
    """Attribute each unit of a block on its top images; write the part; return the units."""
    section = _spec(env.spec)
    maps = np.stack([_unit_maps(env, section, u, imgs) for u, imgs in zip(units, images,
                                                                         strict=True)])
    index = np.full((len(units), section.top_k), -1, np.int64)
    for i, imgs in enumerate(images):
        index[i, :len(imgs)] = imgs
    path = env.job.unit_attribution_part(section.layer, block)
    storage.makedirs(path.parent)
    storage.save_npz(path, units=np.asarray(units, np.int64), images=index, maps=maps)
    return len(units)


def unit_images(ctx: JobContext) -> dict[int, list[int]]:
    """Chosen unit -> its first ``top_k`` top images (from the records), in rank order."""
    section = _spec(ctx.spec)
    records = {r.unit: r for r in ctx.records[section.layer]}
    chosen = (range(ctx.shapes[section.layer][0]) if section.units == "all"
              else sorted(section.units))
    return {u: [t.index for t in records[u].top_images[:section.top_k]] for u in chosen}


def plan(ctx: JobContext) -> Plan | None:
    """Every block of ``units_per_task`` units without a done marker; None without the spec."""
    section = ctx.spec.analyses.unit_attribution
    if section is None:
        return None
    chosen = list(unit_images(ctx).items())
    n = section.units_per_task
    blocks = [chosen[i:i + n] for i in range(0, len(chosen), n)]
    calls: list[Call] = [(b, [u for u, _ in part], [imgs for _, imgs in part])
                         for b, part in enumerate(blocks)
                         if not verified_done(ctx.job.unit_attribution_part(section.layer, b),
                                              ctx.stage_hash)]
    return Plan(len(blocks), len(blocks) - len(calls), calls)


def collect(ctx: JobContext, call: Call, result: int) -> int:
    """The actor wrote the part: mark it done."""
    mark_done(ctx.job.unit_attribution_part(_spec(ctx.spec).layer, call[0]), ctx.stage_hash)
    return 1


def finish(ctx: JobContext) -> int:
    """Nothing to merge: the report reads the parts."""
    return 0


def _field(name: str) -> str:
    return f"job spec field 'analyses.unit_attribution.{name}'"


def check(spec: JobSpec, info: ModelInfo) -> Shapes:
    """The layer is one of the job's layers (its top images come from the top_images stage),
    with the listed units and ``top_k`` top images."""
    section = spec.analyses.unit_attribution
    if section is None:
        return {}
    if section.layer not in spec.layers:
        raise SpecError(f"{_field('layer')}: {section.layer!r} is not among the job's layers",
                        expected=f"one of {list(spec.layers)}",
                        hint="add it to `layers` (its top images come from them)")
    units = info.shapes[section.layer][0]
    if section.units != "all" and max(section.units) >= units:
        raise SpecError(f"{_field('units')}: unit {max(section.units)} of layer "
                        f"{section.layer!r}", expected=f"indices below its {units} units")
    if section.top_k > spec.top_images.k:
        raise SpecError(f"{_field('top_k')}: {section.top_k} top images",
                        expected=f"at most top_images.k ({spec.top_images.k})",
                        hint="raise top_images.k or lower top_k")
    return {}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``analyses.unit_attribution`` section."""
    section = spec.analyses.unit_attribution
    return {"unit_attribution": section.model_dump(mode="json") if section else None}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``unit_attribution/``."""
    return (job.stage_dir("unit_attribution"),)


STAGE = Stage(name="unit_attribution", runs_on="actors", work=unit_attribution_work, plan=plan,
              collect=collect, finish=finish, outputs=outputs, covers=covers,
              owns=("analyses",), check=check,
              used=uses("analyses", "unit_attribution"))
