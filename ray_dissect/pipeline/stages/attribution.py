"""Stage ``attribution``: gradient and CAM maps of every image (model actors, an image shard
each; only when the spec has ``analyses.attribution``).

Work unit: shard s -> ``attribution.zarr`` arrays ``<method>`` (n, H, W) float32 raw maps at
the network's input resolution (:mod:`ray_dissect.visualize.attribution`), ``targets`` (n,)
int64 (the class each map explains; -1 for ``regression``), with ``gradcam`` ``crop_boxes``
(n, 4) int64 Grad-CAM crop (top, left, bottom, right; -1 when empty), with ``feature_maps``
``feature_maps`` (n, C, h, w) uint8 grey maps of the layer; with ``weights`` the work unit of
shard 0 writes ``attribution/weights.npz`` (first convolution's filters, (O, kh, kw, I)
uint8; it depends on no image). An
unreadable image gets zero maps (it is already recorded by the activations stage).
Normalisation is for display only (the report's overlays).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import CHUNK_IMAGES, JobDir, shard_range
from ray_dissect.models.build import probe_layers
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage, section
from ray_dissect.pipeline.stages.activations import read_batch
from ray_dissect.report.visual_pages import ATTRIBUTION_PAGE
from ray_dissect.spec import AttributionSpec, JobSpec
from ray_dissect.spec.analyses import GRADIENT_METHODS
from ray_dissect.storage import AnyPath, arrays


def _spec(env_or_ctx: WorkEnv | JobContext) -> AttributionSpec:
    spec = env_or_ctx.spec.analyses.attribution
    if spec is None:
        raise RuntimeError("the attribution stage runs only with analyses.attribution")
    return spec


def default_head(model: Any) -> str:
    """The name of the model's last ``nn.Linear`` (the CAM head when none is named)."""
    from torch import nn

    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise SpecError("cam needs a linear head after the global average pool",
                        given="no nn.Linear in the model",
                        hint="drop 'cam' from analyses.attribution.methods")
    return linear[-1]


def _targets(env: WorkEnv, spec: AttributionSpec, x: Any) -> tuple[Any, np.ndarray]:
    """What the maps explain: the runner's target and the (n,) int64 classes to record."""
    import torch

    if spec.target == "regression":
        return "regression", np.full(len(x), -1, dtype=np.int64)
    if spec.target == "predicted":
        with torch.no_grad():
            classes = env.model(x).argmax(1).cpu().numpy().astype(np.int64)
    else:
        classes = np.full(len(x), int(spec.target), dtype=np.int64)
    return classes.tolist(), classes


def _boxes(gradcam: np.ndarray, threshold: float) -> np.ndarray:
    from ray_dissect.visualize.attribution import crop

    out = np.full((len(gradcam), 4), -1, dtype=np.int64)
    for i, heat in enumerate(gradcam):
        box = crop(heat, np.zeros(heat.shape, np.uint8), threshold).box
        if box is not None:
            out[i] = box
    return out


def _batch_maps(env: WorkEnv, spec: AttributionSpec, images: list[np.ndarray]
                ) -> dict[str, np.ndarray]:
    import torch

    from ray_dissect.visualize.attribution import AttributionRunner, feature_maps

    head = spec.head or (default_head(env.model) if "cam" in spec.methods else None)
    runner = AttributionRunner(env.model, spec.layer, head, layer_input=spec.layer_input)
    x = torch.from_numpy(preprocess(images, env.spec.model.preprocess)).to(env.device)
    target, classes = _targets(env, spec, x)
    gradients = [m for m in spec.methods if m in GRADIENT_METHODS]
    maps = runner.attribute(x, gradients, target) if gradients else {}
    out = {m: t.detach().float().cpu().numpy() for m, t in maps.items()}
    out["targets"] = classes
    if "feature_maps" in spec.methods and spec.layer is not None:
        out["feature_maps"] = feature_maps(env.model, spec.layer, x)
    if "gradcam" in out:
        out["crop_boxes"] = _boxes(out["gradcam"], spec.crop_threshold)
    return out


def attribution_work(env: WorkEnv, shard: int, n_images: int) -> int:
    """Compute and write every map of shard ``shard`` (of the first ``n_images`` images)."""
    spec, res = _spec(env), env.spec.resources
    start, stop = shard_range(shard, res.shard_images, n_images)
    parts: dict[str, list[np.ndarray]] = {}
    for b0 in range(start, stop, res.batch_size):
        bad: list[tuple[int, str]] = []
        images, bad_rows = read_batch(env, b0, min(b0 + res.batch_size, stop), bad)
        for name, values in _batch_maps(env, spec, images).items():
            if name not in ("targets", "crop_boxes"):
                values[bad_rows] = 0
            parts.setdefault(name, []).append(values)
    if shard == 0 and "weights" in spec.methods:
        from ray_dissect.visualize.attribution import weights

        storage.makedirs(env.job.root / "attribution")
        storage.save_npz(env.job.root / "attribution" / "weights.npz", weights=weights(env.model))
    for name, chunks in parts.items():
        arrays.write_shard(env.job.attribution_zarr, name, shard, res.shard_images,
                           np.concatenate(chunks))
    return shard


def _arrays(ctx: JobContext, spec: AttributionSpec, n: int) -> dict[str, tuple[tuple[int, ...],
                                                                               str]]:
    size = ctx.spec.model.preprocess.size
    out: dict[str, tuple[tuple[int, ...], str]] = {
        m: ((n, size, size), "float32") for m in spec.methods if m in GRADIENT_METHODS}
    if "feature_maps" in spec.methods and spec.layer is not None:
        out["feature_maps"] = ((n, *ctx.shapes[spec.layer]), "uint8")
    out["targets"] = ((n,), "int64")
    if "gradcam" in spec.methods:
        out["crop_boxes"] = ((n, 4), "int64")
    return out


def plan(ctx: JobContext) -> Plan | None:
    """Create the arrays; a shard is to do unless every array has it. None without the spec."""
    spec = ctx.spec.analyses.attribution
    if spec is None:
        return None
    res = ctx.spec.resources
    n = min(len(ctx.dataset), spec.limit or len(ctx.dataset))
    n_shards = math.ceil(n / res.shard_images)
    done = np.ones(n_shards, dtype=bool)
    for name, (shape, dtype) in _arrays(ctx, spec, n).items():
        arrays.create_image_array(ctx.job.attribution_zarr, name, shape, dtype, res.shard_images,
                                  math.gcd(res.shard_images, CHUNK_IMAGES),
                                  stage_hash=ctx.stage_hash)
        done &= arrays.done_shards(ctx.job.attribution_zarr, name)
    todo = [s for s in range(n_shards) if not done[s]]
    return Plan(n_shards, n_shards - len(todo), [(s, n) for s in todo])


def collect(ctx: JobContext, call: tuple[int, int], result: int) -> int:
    """A shard is complete once its actor returns (it wrote every array)."""
    return 1


def finish(ctx: JobContext) -> int:
    """Nothing to load: the report reads the maps from ``attribution.zarr``."""
    return 0


def check(spec: JobSpec, info: ModelInfo) -> Shapes:
    """The modules the section names exist (and CAM has a linear head); returns the feature
    maps' layer and its output shape (C, h, w) when ``feature_maps`` is asked for."""
    attribution = spec.analyses.attribution
    if attribution is None:
        return {}
    names = {name for name, _ in info.model.named_modules() if name}
    for field, name in (("layer", attribution.layer), ("head", attribution.head)):
        if name is not None and name not in names:
            raise SpecError(f"job spec field 'analyses.attribution.{field}': {name!r} is not a "
                            "module of the model", hint="see `ray-dissect layers JOB.yaml`")
    if "cam" in attribution.methods and attribution.head is None:
        default_head(info.model)
    return _feature_map_shape(info.model, spec, attribution)


def _feature_map_shape(model: Any, spec: JobSpec, attribution: AttributionSpec) -> Shapes:
    """Output shape of the layer whose feature maps the stage stores ({} without them)."""
    if "feature_maps" not in attribution.methods or attribution.layer is None:
        return {}
    (name, shape, _), = probe_layers(model, spec.model.preprocess.size, [attribution.layer])
    if len(shape) != 3:
        raise SpecError(f"job spec field 'analyses.attribution.layer': {name!r} does not output "
                        "(channels, h, w) maps", given=shape, hint="pick a convolutional module")
    return {name: shape}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``analyses.attribution`` section."""
    return {"attribution": section(spec, "analyses", "attribution")}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``attribution.zarr``."""
    return (job.attribution_zarr,)


STAGE = Stage(name="attribution", runs_on="actors", work=attribution_work, plan=plan,
              collect=collect, finish=finish, outputs=outputs, covers=covers,
              owns=("analyses",), check=check, report=ATTRIBUTION_PAGE)
