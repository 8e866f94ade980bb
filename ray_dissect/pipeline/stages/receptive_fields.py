"""Stage ``receptive_fields``: empirical receptive fields by occlusion (model actors, a block of
distinct top images per work unit; only with ``analyses.receptive_fields``).

Scheduled by image, not by unit: one occluded forward pass measures every unit of the layer,
so for each layer the union of its chosen units' first ``top_k`` top images (the
``top_images`` stage's records) is cut into blocks of ``images_per_task`` images, and each
image is occluded once, for every unit that has it among its top images. Cost per image:
``n_windows = (1 + (H - o) // s) ** 2`` forwards (5,184 at 224 / 11 / 3) of the model cut after
the layer (:class:`ray_dissect.models.truncate.Truncated`, a hook that stops the forward
pass), plus one clean forward; the occluded copies are built on the actor's device.

Work unit: ``(layer, block, images, units per image)`` ->
``receptive_fields/<layer>/<block>.npz`` holding, per (image, unit) pair in image then unit
order, ``image`` (P,) int64, ``unit`` (P,) int64, ``values`` (P, n_y, n_x) float32 (the
change of the unit at its clean peak per window, :func:`discrepancy_maps`), ``centres``
(P, 2) float64 (the peak's input-space centre) and ``activation`` (P,) float32 (the clean
peak); then its done marker. A pair costs n_windows float32 (20 KB at 224 / 11 / 3), not a
painted H x W map: the driver paints.

Driver (``finish``): per layer, every pair's map painted (the mean of the windows covering a
pixel; compat: overwrite), re-centred on its centre (compat: the seed's chain) and averaged per
unit (:class:`RFAccumulator`) in image order, so the result does not depend on the blocks;
written whole to ``receptive_fields.zarr`` ``data/<layer>`` (units, H, W) float32 (zeros for
units not chosen or without top images) with its done marker; the records of the chosen units
gain ``receptive_field`` (:func:`rf_size`: half-maximum square side, centroid offset). With
``compat`` the seed's cut can erase a weak unit's maps: the same maps re-centred without it go
to ``data/<layer>+uncut``, the record gains their ``uncut_size`` and, when the cut left
nothing, a ``warning`` that the page shows beside both maps. Driver
memory while merging a layer: units x H x W float64 (100 MB for 256 units at 224).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage, required_section, uses
from ray_dissect.records.schema import ReceptiveField, UnitRecord
from ray_dissect.spec import JobSpec, ReceptiveFieldsSpec
from ray_dissect.spec.base import hashed_data
from ray_dissect.spec.units import selected_units
from ray_dissect.storage import AnyPath, arrays

PAINT_CHUNK = 64
"""Pairs painted at once by the driver (PAINT_CHUNK x H x W float64 of scratch)."""

Block = tuple[list[int], list[list[int]]]


def _spec(spec: JobSpec) -> ReceptiveFieldsSpec:
    return required_section(spec, "analyses", "receptive_fields", ReceptiveFieldsSpec)


def occlusion_grid(spec: JobSpec) -> Any:
    """The occluder windows over the network input (``size`` x ``size``)."""
    from ray_dissect.visualize.receptive_fields import OcclusionGrid

    rf, size = _spec(spec), spec.model.preprocess.size
    return OcclusionGrid(size, size, rf.occluder, rf.stride, rf.cover_remainder)


def occlusion_fill(spec: JobSpec) -> Any:
    """The fill in normalised network-input units (it is defined on [0, 1] pixels)."""
    from ray_dissect.visualize.receptive_fields import NoiseFill

    rf, pre = _spec(spec), spec.model.preprocess
    fill = NoiseFill() if rf.fill == "noise" else NoiseFill.constant(float(rf.fill))
    return fill.normalized(pre.mean, pre.std)


def rf_work(env: WorkEnv, layer: str, block: int, images: list[int],
            units: list[list[int]]) -> int:
    """Occlude each image of a block once and keep its units' discrepancy; write the part.

    Args:
        layer: the probed layer; block: the block's number among the layer's blocks.
        images: global image indices, ascending; units: per image, the (ascending) units that
            have it among their first ``top_k`` top images.

    Returns:
        The number of images occluded.
    """
    import torch

    from ray_dissect.models.truncate import Truncated
    from ray_dissect.visualize.receptive_fields import discrepancy_maps

    spec, rf = env.spec, _spec(env.spec)
    grid, fill = occlusion_grid(spec), occlusion_fill(spec)
    batch = rf.batch_size or spec.resources.batch_size
    found: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "unit", "values", "centres",
                                                          "activation")}
    with Truncated(env.model, [layer]) as cut:
        for index, keep in zip(images, units, strict=True):
            pixels = preprocess([env.dataset.read_image(index)], spec.model.preprocess)
            x = torch.from_numpy(pixels[0]).to(env.device)
            d = discrepancy_maps(cut.at(layer), x, grid=grid, batch_size=batch, seed=rf.seed,
                                 image_index=index, fill=fill, compat=rf.compat, units=keep)
            found["image"].append(np.full(len(keep), index, dtype=np.int64))
            found["unit"].append(np.asarray(keep, dtype=np.int64))
            found["values"].append(d.values)
            found["centres"].append(d.centres)
            found["activation"].append(d.activation)
    path = env.job.receptive_fields_part(layer, block)
    storage.makedirs(path.parent)
    storage.save_npz(path, **{k: np.concatenate(v) for k, v in found.items()})
    return len(images)


def unit_images(ctx: JobContext, layer: str) -> dict[int, list[int]]:
    """Chosen unit -> its first ``top_k`` top images (from the records), in rank order."""
    rf = _spec(ctx.spec)
    records = {r.unit: r for r in ctx.records[layer]}
    chosen = sorted(records) if rf.units == "all" else sorted(rf.units)
    return {u: [t.index for t in records[u].top_images[:rf.top_k]] for u in chosen}


def image_blocks(ctx: JobContext, layer: str) -> list[Block]:
    """The layer's distinct top images, ascending, in blocks of ``images_per_task``, each
    image with the ascending units that have it."""
    by_image: dict[int, list[int]] = {}
    for unit, images in unit_images(ctx, layer).items():
        for image in images:
            by_image.setdefault(image, []).append(unit)
    order = sorted(by_image)
    n = _spec(ctx.spec).images_per_task
    return [(order[i:i + n], [by_image[j] for j in order[i:i + n]])
            for i in range(0, len(order), n)]


def plan(ctx: JobContext) -> Plan | None:
    """Every block without a done marker, over the chosen layers; None without the spec."""
    rf = ctx.spec.analyses.receptive_fields
    if rf is None:
        return None
    total, calls = 0, []
    for layer in rf.layers:
        blocks = image_blocks(ctx, layer)
        total += len(blocks)
        calls += [(layer, b, images, units) for b, (images, units) in enumerate(blocks)
                  if not verified_done(ctx.job.receptive_fields_part(layer, b),
                                       ctx.stage_hash)]
    return Plan(total, total - len(calls), calls)


def collect(ctx: JobContext, call: tuple[str, int, list[int], list[list[int]]],
            result: int) -> int:
    """The actor wrote the part: mark it done; the layer's fields are to be merged again."""
    mark_done(ctx.job.receptive_fields_part(call[0], call[1]), ctx.stage_hash)
    ctx.parts.setdefault("receptive_fields", set()).add(call[0])
    return 1


def consolidate_layer(ctx: JobContext, layer: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(units, H, W) float32: every unit's mean re-centred map over the layer's parts; with
    ``compat`` also the same maps re-centred on their peaks' centres without the seed's cut
    (the uncut maps the page shows beside the seed's), else None."""
    from ray_dissect.visualize.receptive_fields import RFAccumulator, paint

    rf, grid = _spec(ctx.spec), occlusion_grid(ctx.spec)
    units = ctx.shapes[layer][0]
    acc = RFAccumulator(units, grid.height, grid.width, compat=rf.compat)
    uncut = RFAccumulator(units, grid.height, grid.width) if rf.compat else None
    for block in range(len(image_blocks(ctx, layer))):
        part = storage.load_npz(ctx.job.receptive_fields_part(layer, block))
        for start in range(0, len(part["unit"]), PAINT_CHUNK):
            rows = slice(start, start + PAINT_CHUNK)
            painted = paint(part["values"][rows], grid, overwrite=rf.compat)
            acc.add_units(part["unit"][rows], painted, part["centres"][rows])
            if uncut is not None:
                uncut.add_units(part["unit"][rows], painted, part["centres"][rows])
    return acc.result(), None if uncut is None else uncut.result()


def uncut_name(layer: str) -> str:
    """The ``receptive_fields.zarr`` array of a layer's uncut maps (compat only); ``+`` never
    occurs in a layer key, so it cannot be another layer's array."""
    return f"{layer_key(layer)}+uncut"


def _write(ctx: JobContext, name: str, fields: np.ndarray) -> None:
    units = fields.shape[0]
    arrays.create_image_array(ctx.job.receptive_fields_zarr, name, fields.shape,
                              "float32", units, math.gcd(units, 16))
    arrays.write_shard(ctx.job.receptive_fields_zarr, name, 0, units, fields)


def _written(ctx: JobContext, layer: str) -> bool:
    names = [layer_key(layer)] + ([uncut_name(layer)] if _spec(ctx.spec).compat else [])
    dones = [arrays.done_shards(ctx.job.receptive_fields_zarr, name) for name in names]
    return all(done.size and done.all() for done in dones)


def _with_field(rec: UnitRecord, field: np.ndarray, images: int,
                uncut: np.ndarray | None) -> UnitRecord:
    from ray_dissect.visualize.receptive_fields import rf_size

    size = rf_size(field)
    offset = None if size.area == 0 else size.offset
    extra: dict[str, object] = {}
    if uncut is not None:
        extra["uncut_size"] = rf_size(uncut).side
        if size.area == 0:
            extra["warning"] = CUT_WARNING
    return rec.model_copy(update={"receptive_field": ReceptiveField(
        size=size.side, offset=offset, images=images, **extra)})


CUT_WARNING = ("empty: the seed's absolute cut (grey = 15 x change, kept where >= 25) erased "
               "every map of this unit (changes below 25 / 15 = 1.67); see the uncut map")


def finish(ctx: JobContext) -> int:
    """Merge the layers whose parts changed (or whose map is missing), write them, and give
    the chosen units' records their receptive field (read back from the store); keep the
    per-image maps where :func:`wants_image_maps`."""
    rf = _spec(ctx.spec)
    changed = ctx.parts.get("receptive_fields", set())
    for layer in rf.layers:
        if layer in changed or not _written(ctx, layer):
            fields, uncut = consolidate_layer(ctx, layer)
            _write(ctx, layer_key(layer), fields)
            if uncut is not None:
                _write(ctx, uncut_name(layer), uncut)
        if wants_image_maps(ctx, layer) and (layer in changed or not _maps_written(ctx, layer)):
            for name, values in image_maps(ctx, layer).items():
                _write(ctx, f"{layer_key(layer)}+{name}", values)
        _attach(ctx, layer)
    return 0


IMAGE_MAPS_UNITS = 64
"""Chosen units of a layer up to which ``image_maps: null`` keeps the per-image maps."""


def wants_image_maps(ctx: JobContext, layer: str) -> bool:
    """Whether the layer's per-image maps are kept (``image_maps``, or <= 64 chosen units)."""
    rf = _spec(ctx.spec)
    if rf.image_maps is not None:
        return rf.image_maps
    return len(unit_images(ctx, layer)) <= IMAGE_MAPS_UNITS


def _maps_written(ctx: JobContext, layer: str) -> bool:
    done = arrays.done_shards(ctx.job.receptive_fields_zarr, f"{layer_key(layer)}+maps")
    return bool(done.size and done.all())


def image_maps(ctx: JobContext, layer: str) -> dict[str, np.ndarray]:
    """Each chosen unit's painted discrepancy map on each of its top images, in rank order.

    Returns:
        ``units`` (C,) int64 the chosen units ascending; ``images`` (C, top_k) int64 their top
        images (-1 past the last); ``maps`` (C, top_k, H, W) float32 the painted maps (zeros
        past the last); ``centres`` (C, top_k, 2) float64 the clean peak's input-space centre
        (NaN past the last).
    """
    from ray_dissect.visualize.receptive_fields import paint

    rf, grid = _spec(ctx.spec), occlusion_grid(ctx.spec)
    chosen = unit_images(ctx, layer)
    row = {(u, image): (c, j) for c, (u, images) in enumerate(chosen.items())
           for j, image in enumerate(images)}
    out = {"units": np.asarray(list(chosen), dtype=np.int64),
           "images": np.full((len(chosen), rf.top_k), -1, dtype=np.int64),
           "maps": np.zeros((len(chosen), rf.top_k, grid.height, grid.width), np.float32),
           "centres": np.full((len(chosen), rf.top_k, 2), np.nan)}
    for block in range(len(image_blocks(ctx, layer))):
        part = storage.load_npz(ctx.job.receptive_fields_part(layer, block))
        for p, (image, unit) in enumerate(zip(part["image"], part["unit"], strict=True)):
            c, j = row[(int(unit), int(image))]
            out["images"][c, j], out["centres"][c, j] = image, part["centres"][p]
            out["maps"][c, j] = paint(part["values"][p:p + 1], grid, overwrite=rf.compat)[0]
    return out


def _attach(ctx: JobContext, layer: str) -> None:
    """The chosen units' records gain their receptive field (maps read from the store)."""
    store = ctx.job.receptive_fields_zarr
    fields = arrays.open_array(store, layer_key(layer))[:]
    uncut = arrays.open_array(store, uncut_name(layer))[:] if _spec(ctx.spec).compat else None
    records = ctx.records[layer]
    position = {r.unit: i for i, r in enumerate(records)}
    for unit, images in unit_images(ctx, layer).items():
        i = position[unit]
        records[i] = _with_field(records[i], fields[unit], len(images),
                                 None if uncut is None else uncut[unit])


def _field(name: str) -> str:
    return f"job spec field 'analyses.receptive_fields.{name}'"


def check(spec: JobSpec, info: ModelInfo) -> Shapes:
    """The section's layers are among the job's layers (their top images come from the
    top_images stage), with the listed units, ``top_k`` top images and room for the
    occluder."""
    rf = spec.analyses.receptive_fields
    if rf is None:
        return {}
    for layer in rf.layers:
        if layer not in spec.layers:
            raise SpecError(f"{_field('layers')}: {layer!r} is not among the job's layers",
                            expected=f"one of {list(spec.layers)}",
                            hint="add it to `layers` (its top images come from them)")
        dissected = set(selected_units(spec.units, layer, info.shapes[layer][0]).tolist())
        missing = sorted(set(rf.units) - dissected) if rf.units != "all" else []
        if missing:
            raise SpecError(f"{_field('units')}: unit {missing[0]} of layer {layer!r}",
                            expected=f"one of the {len(dissected)} units the job dissects",
                            hint="see the job's `units`")
    if rf.top_k > spec.top_images.k:
        raise SpecError(f"{_field('top_k')}: {rf.top_k} top images",
                        expected=f"at most top_images.k ({spec.top_images.k})",
                        hint="raise top_images.k or lower top_k")
    if rf.occluder > spec.model.preprocess.size:
        raise SpecError(f"{_field('occluder')}: {rf.occluder} px",
                        expected=f"at most the input size {spec.model.preprocess.size}")
    return {}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``analyses.receptive_fields`` section but ``image_maps`` (an extra output from the
    same parts: no occlusion is redone)."""
    rf = spec.analyses.receptive_fields
    if rf is None:
        return {"receptive_fields": None}
    fields = hashed_data(rf)
    fields.pop("image_maps", None)
    return {"receptive_fields": fields}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``receptive_fields.zarr`` and ``receptive_fields/``."""
    return job.receptive_fields_zarr, job.stage_dir("receptive_fields")


STAGE = Stage(name="receptive_fields", runs_on="actors", work=rf_work, plan=plan,
              collect=collect, finish=finish, outputs=outputs, covers=covers,
              owns=("analyses",), check=check,
              used=uses("analyses", "receptive_fields"))
