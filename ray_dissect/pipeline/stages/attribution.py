"""Stage ``attribution``: gradient and CAM maps of every image (model actors, an image shard
each; only when the spec has ``analyses.attribution``).

Work unit: shard s -> ``attribution.zarr`` arrays ``<method>`` raw maps at the network's
input resolution (:mod:`ray_dissect.visualize.attribution`), float32 (n, H, W) with one target
per image or (n, T, H, W) with T (``top_k`` or a list of classes); ``targets`` (n[, T]) int64
(the class each map explains; -1 for ``regression``) and ``probabilities`` (n[, T]) float32
(its softmax probability; NaN for ``regression``); with ``gradcam`` ``crop_boxes`` (n, 4)
int64 Grad-CAM crop of the first target (top, left, bottom, right; -1 when empty); with
``feature_maps`` (n, C, h, w) uint8 grey maps of ``layer`` (array ``feature_maps``) or of
each of ``feature_layers`` (arrays ``feature_maps.<layer>``). The work unit of shard 0 writes
``attribution/classes.json`` (the class names, maybe empty) and with ``weights``
``attribution/weights.npz`` (first convolution's filters, (O, kh, kw, I) uint8). An
unreadable image gets zero maps (it is already recorded by the activations stage).
Normalisation is for display only (the report's overlays).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import ImageDataset
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import CHUNK_IMAGES, JobDir, shard_range
from ray_dissect.models.build import probe_layers
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage, required_section, uses
from ray_dissect.pipeline.stages.activations import read_batch
from ray_dissect.report.visual_pages import ATTRIBUTION_PAGE
from ray_dissect.spec import AttributionSpec, JobSpec
from ray_dissect.spec.analyses import GRADIENT_METHODS
from ray_dissect.spec.base import hashed_data
from ray_dissect.storage import AnyPath, arrays


def _spec(env_or_ctx: WorkEnv | JobContext) -> AttributionSpec:
    return required_section(env_or_ctx.spec, "analyses", "attribution", AttributionSpec)


def default_head(model: Any) -> str:
    """The name of the model's last ``nn.Linear`` (the CAM head when none is named)."""
    from torch import nn

    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise SpecError("cam needs a linear head after the global average pool",
                        given="no nn.Linear in the model",
                        hint="drop 'cam' from analyses.attribution.methods")
    return linear[-1]


def feature_array(spec: AttributionSpec, layer: str) -> str:
    """The store array of a layer's feature maps (``feature_maps`` for the default layer)."""
    return f"feature_maps.{layer}" if spec.feature_layers else "feature_maps"


def class_names(env: WorkEnv, spec: AttributionSpec) -> tuple[str, ...]:
    """The model's class names (:func:`ray_dissect.visualize.targets.class_names`)."""
    from ray_dissect.visualize.targets import class_names as names

    outputs = _outputs(env)
    return names(outputs, spec.classes, getattr(env.dataset, "classes", ()) or ())


def _outputs(env: WorkEnv) -> int:
    return _outputs_of(env.model, env.spec, env.device)


def _outputs_of(model: Any, spec: JobSpec, device: str = "cpu") -> int:
    """The number of outputs of the model (one forward of a blank image)."""
    import torch

    size = spec.model.preprocess.size
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size, device=device))
    return int(out.flatten(1).shape[1])


def _targets(env: WorkEnv, spec: AttributionSpec, x: Any, rows: range,
             names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """What the maps explain: (n, T) int64 classes and (n, T) float32 probabilities."""
    import torch

    from ray_dissect.visualize.targets import folder_targets, resolve

    with torch.no_grad():
        logits = env.model(x)
    folder = None
    if spec.target == "folder":
        labels = np.asarray(getattr(env.dataset, "labels", np.full(rows.stop, -1)))[
            rows.start:rows.stop]
        folder = folder_targets(getattr(env.dataset, "classes", ()) or (), labels,
                                names)
    return resolve(spec.target, logits, folder)


def _boxes(gradcam: np.ndarray, threshold: float) -> np.ndarray:
    from ray_dissect.visualize.attribution import crop

    out = np.full((len(gradcam), 4), -1, dtype=np.int64)
    for i, heat in enumerate(gradcam):
        box = crop(heat, np.zeros(heat.shape, np.uint8), threshold).box
        if box is not None:
            out[i] = box
    return out


def method_params(spec: AttributionSpec) -> Any:
    """The spec's method settings as :class:`ray_dissect.visualize.methods.MethodParams`."""
    from ray_dissect.visualize.methods import MethodParams

    return MethodParams(ig_steps=spec.ig_steps, smoothgrad_samples=spec.smoothgrad_samples,
                        smoothgrad_stdev=spec.smoothgrad_stdev,
                        occlusion_window=spec.occlusion_window,
                        occlusion_stride=spec.occlusion_stride,
                        scorecam_batch=spec.scorecam_batch, seed=spec.seed)


def _batch_maps(env: WorkEnv, spec: AttributionSpec, images: list[np.ndarray], rows: range,
                names: tuple[str, ...]) -> dict[str, np.ndarray]:
    import torch

    from ray_dissect.visualize.attribution import AttributionRunner, feature_maps

    head = spec.head or (default_head(env.model) if "cam" in spec.methods else None)
    layouts = env.spec.model.layouts
    runner = AttributionRunner(env.model, spec.layer, head, layer_input=spec.layer_input,
                               params=method_params(spec), layout=layouts.get(spec.layer or ""))
    x = torch.from_numpy(preprocess(images, env.spec.model.preprocess)).to(env.device)
    classes, probs = _targets(env, spec, x, rows, names)
    gradients: list[str] = [m for m in spec.methods if m in GRADIENT_METHODS]
    target: Any = "regression" if spec.target == "regression" else None
    per_target = [runner.attribute(x, gradients, target or classes[:, t].tolist())
                  for t in range(classes.shape[1])] if gradients else []
    out: dict[str, np.ndarray] = {
        m: np.stack([maps[m].detach().float().cpu().numpy() for maps in per_target], 1)
        for m in gradients}
    out |= {"targets": classes, "probabilities": probs}
    if spec.n_targets == 1:
        out = {name: values[:, 0] for name, values in out.items()}
    for layer in spec.map_layers:
        out[feature_array(spec, layer)] = feature_maps(env.model, layer, x,
                                                       layout=layouts.get(layer))
    if "gradcam" in out:
        first = out["gradcam"] if spec.n_targets == 1 else out["gradcam"][:, 0]
        out["crop_boxes"] = _boxes(first, spec.crop_threshold)
    return out


def attribution_work(env: WorkEnv, shard: int, n_images: int) -> int:
    """Compute and write every map of shard ``shard`` (of the first ``n_images`` images)."""
    spec, res = _spec(env), env.spec.resources
    start, stop = shard_range(shard, res.shard_images, n_images)
    parts: dict[str, list[np.ndarray]] = {}
    names = class_names(env, spec)
    for b0 in range(start, stop, res.batch_size):
        bad: list[tuple[int, str]] = []
        b1 = min(b0 + res.batch_size, stop)
        images, bad_rows = read_batch(env, b0, b1, bad)
        for name, values in _batch_maps(env, spec, images, range(b0, b1), names).items():
            if name not in ("targets", "crop_boxes", "probabilities"):
                values[bad_rows] = 0
            parts.setdefault(name, []).append(values)
    if shard == 0:
        _write_shared(env, spec, names)
    for name, chunks in parts.items():
        arrays.write_shard(env.job.attribution_zarr, name, shard, res.shard_images,
                           np.concatenate(chunks))
    return shard


def _write_shared(env: WorkEnv, spec: AttributionSpec, names: tuple[str, ...]) -> None:
    """``attribution/classes.json`` and, with ``weights``, ``attribution/weights.npz``."""
    root = env.job.root / "attribution"
    storage.makedirs(root)
    storage.write_text(root / "classes.json", json.dumps(list(names)))
    if "weights" in spec.methods:
        from ray_dissect.visualize.attribution import weights

        storage.save_npz(root / "weights.npz", weights=weights(env.model))


def _arrays(ctx: JobContext, spec: AttributionSpec, n: int) -> dict[str, tuple[tuple[int, ...],
                                                                               str]]:
    size = ctx.spec.model.preprocess.size
    per = (n,) if spec.n_targets == 1 else (n, spec.n_targets)
    out: dict[str, tuple[tuple[int, ...], str]] = {
        m: ((*per, size, size), "float32") for m in spec.methods if m in GRADIENT_METHODS}
    for layer in spec.map_layers:
        out[feature_array(spec, layer)] = ((n, *ctx.shapes[layer]), "uint8")
    out["targets"] = (per, "int64")
    out["probabilities"] = (per, "float32")
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
    """The modules the section names exist (and CAM has a linear head); returns each feature
    map layer and its output shape (C, h, w) when ``feature_maps`` is asked for."""
    attribution = spec.analyses.attribution
    if attribution is None:
        return {}
    names = {name for name, _ in info.model.named_modules() if name}
    fields = [("layer", attribution.layer), ("head", attribution.head),
              *(("feature_layers", layer) for layer in attribution.feature_layers)]
    for field, name in fields:
        if name is not None and name not in names:
            raise SpecError(f"job spec field 'analyses.attribution.{field}': {name!r} is not a "
                            "module of the model", hint="see `ray-dissect layers JOB.yaml`")
    if "cam" in attribution.methods and attribution.head is None:
        default_head(info.model)
    if attribution.classes is not None:
        from ray_dissect.visualize.targets import read_class_names

        read_class_names(attribution.classes, _outputs_of(info.model, spec))
    return _feature_map_shape(info.model, spec, attribution)


def _feature_map_shape(model: Any, spec: JobSpec, attribution: AttributionSpec) -> Shapes:
    """Output shapes of the layers whose feature maps the stage stores ({} without them)."""
    if not attribution.map_layers:
        return {}
    field = "feature_layers" if attribution.feature_layers else "layer"
    shapes: Shapes = {}
    for name, shape, _ in probe_layers(model, spec.model.preprocess.size,  # tokens: as maps
                                       list(attribution.map_layers), spec.model.layouts):
        if len(shape) != 3:
            raise SpecError(f"job spec field 'analyses.attribution.{field}': {name!r} does not "
                            "output (channels, h, w) maps", given=shape,
                            hint="pick a convolutional module")
        shapes[name] = shape
    return shapes


def check_dataset(spec: JobSpec, dataset: ImageDataset) -> None:
    """``target: folder`` needs images in class folders (format ``images``)."""
    attribution = spec.analyses.attribution
    if attribution is None or attribution.target != "folder":
        return
    if not getattr(dataset, "classes", ()):
        raise SpecError("job spec field 'analyses.attribution.target': 'folder' needs images "
                        "in class folders", given=spec.dataset.format,
                        expected="format: images with one subfolder per class",
                        hint="use target: predicted")


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The ``analyses.attribution`` section, without the fields added later at their
    defaults (so a spec written before them keeps its hash)."""
    attribution = spec.analyses.attribution
    return {"attribution": hashed_data(attribution) if attribution is not None else None}


def outputs(job: JobDir) -> tuple[AnyPath, ...]:
    """``attribution.zarr``."""
    return (job.attribution_zarr,)


STAGE = Stage(name="attribution", runs_on="actors", work=attribution_work, plan=plan,
              collect=collect, finish=finish, outputs=outputs, covers=covers,
              owns=("analyses",), check=check, check_dataset=check_dataset,
              report=ATTRIBUTION_PAGE,
              used=uses("analyses", "attribution"))
