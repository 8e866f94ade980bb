"""Stages ``prism_pca`` and ``prism``: PRISM colour maps of the first ``limit`` images (model
actors, an image shard per work unit; only with ``analyses.prism``).

The PCA, the RGB normalisation and the colour sets are joint over the image set, hence two
passes and a driver step (:mod:`ray_dissect.visualize.prism` holds the algorithms):

1. ``prism_pca``: shard s -> ``prism/pca_s.npz``, the shard's :class:`PCAAccumulator` state
   (count, sum, Gram matrix of the PCA layer's features, every position of every valid image
   one sample, float64) and the order the layers ran in; then its done marker. The driver
   merges the shards in shard order, runs one ``eigh`` and writes ``prism/pca.npz``: ``mean``
   (C,), ``axes`` (C, 3) (each component's largest loading positive, so colours do not flip
   between runs), ``variance`` (min(n, C),) explained-variance ratios, ``n_samples`` and
   ``ge_order``, the GE layers from the PCA layer back toward the input (reverse run order).
2. ``prism``: shard s -> ``prism.zarr`` ``components`` (n, 3, h, w) float32, the first three
   principal-component scores, and per GE layer ``ge_<layer>`` (n, 1, h_i, w_i) float32, its
   channel mean (all GE needs), and the model's top-3 ``top_classes`` (n, 3) int64 and
   ``top_probs`` (n, 3) float32 (one full forward; -1 / NaN when the output is not logits),
   written whole with their done markers; with ``saliency: gradcam`` also ``gradcam``
   (n, 1, h, w) float32, Grad-CAM of the predicted class at the PCA layer (captum
   ``LayerGradCam``, ReLU; 0 for unreadable images). The driver then reads
   them back for the whole set and writes ``rgb`` (n, 3, H, W) float32 (normalised, after GE;
   at h x w without GE), ``codes`` (n, h, w) uint8 quantised colours ``9 r + 3 g + b``
   (255: dropped by ``inclusive`` / ``exclusive``), ``presence`` (n, 27) bool, ``variance``,
   with ``split_rgb`` ``split`` (n, 3, 3, H, W) float32 and with ``clusters`` ``clusters`` (n,)
   int64 (k-means of the presence vectors), and with ``gradcam`` ``alpha`` (n, 1, H, W) float32,
   the Grad-CAM upsampled bilinearly (``align_corners=False``) to the rgb's H x W and min-max
   scaled per image to [0, 1] (a constant map: 0). Images that are not valid (unreadable) are left
   out of every joint step: zero maps, codes 255, no colours, cluster -1.

Driver memory: the whole set's maps, images x 3 x H x W float32 (38 MB for 64 images at 224),
three times more with ``split_rgb``; PRISM is a per-image visualisation, hence ``limit``.
Redone work units give the same bytes, so a resumed run's arrays are identical.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import ModelError, SpecError
from ray_dissect.job.layout import CHUNK_IMAGES, layer_key, shard_range
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.models.build import probe_layers
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, Plan, WorkEnv
from ray_dissect.pipeline.stage import ModelInfo, Shapes, Stage, required_section, section, uses
from ray_dissect.pipeline.stages.activations import read_batch
from ray_dissect.report.visual_pages import PRISM_PAGE
from ray_dissect.spec import JobSpec, PrismSpec
from ray_dissect.storage import arrays

log = logging.getLogger(__name__)


def _spec(spec: JobSpec) -> PrismSpec:
    return required_section(spec, "analyses", "prism", PrismSpec)


def ge_layers(spec: PrismSpec) -> tuple[str, ...]:
    """The GE layers in use (none without ``gradual_extrapolation``), as listed."""
    return spec.ge_layers if spec.gradual_extrapolation else ()


def ge_name(layer: str) -> str:
    """The ``prism.zarr`` array of a GE layer's channel means."""
    return f"ge_{layer_key(layer)}"


def n_images(ctx: JobContext) -> int:
    """The images PRISM covers: the first ``limit``."""
    return min(len(ctx.dataset), _spec(ctx.spec).limit)


def _shards(env: WorkEnv, valid: np.ndarray, shard: int, n: int) -> Any:
    """Yields (start, stop, {layer: output}, valid rows) per batch of shard ``shard``."""
    import torch

    from ray_dissect.models.truncate import Truncated

    spec, res = _spec(env.spec), env.spec.resources
    start, stop = shard_range(shard, res.shard_images, n)
    with Truncated(env.model, [spec.layer, *ge_layers(spec)]) as cut, torch.inference_mode():
        for b0 in range(start, stop, res.batch_size):
            b1 = min(b0 + res.batch_size, stop)
            images, _ = read_batch(env, b0, b1, [])
            x = torch.from_numpy(preprocess(images, env.spec.model.preprocess)).to(env.device)
            yield b0, b1, cut(x), torch.from_numpy(np.array(valid[b0:b1], dtype=bool))


def pca_work(env: WorkEnv, valid: np.ndarray, shard: int, n: int) -> int:
    """Accumulate one shard's PCA sums over its valid images; write the part (the driver
    marks it done).

    Args:
        valid: (n,) bool images that count; shard: the shard; n: the images PRISM covers.
    """
    from ray_dissect.visualize.prism import PCAAccumulator

    layer, acc, order = _spec(env.spec).layer, None, []
    for _, _, out, ok in _shards(env, valid, shard, n):
        acc = acc or PCAAccumulator(int(out[layer].shape[1]))
        order = list(out)
        if bool(ok.any()):
            acc.add(out[layer][ok.to(out[layer].device)])
    if acc is None:
        raise RuntimeError(f"PRISM shard {shard} holds no images")
    path = env.job.prism_pca_part(shard)
    storage.makedirs(path.parent)
    storage.save_npz(path, **acc.state_dict(), order=np.asarray(order))
    return shard


def _plan_shards(ctx: JobContext, todo: Any) -> Plan:
    n = n_images(ctx)
    n_shards = math.ceil(n / ctx.spec.resources.shard_images)
    calls = [(s, n) for s in range(n_shards) if todo(s)]
    return Plan(n_shards, n_shards - len(calls), calls,
                shared=(ctx.valid_images[:n].copy(),))


def pca_plan(ctx: JobContext) -> Plan | None:
    """Every shard without a done marker; None without ``analyses.prism``."""
    if ctx.spec.analyses.prism is None:
        return None
    return _plan_shards(ctx, lambda s: not verified_done(ctx.job.prism_pca_part(s),
                                                         ctx.stage_hash))


def pca_collect(ctx: JobContext, call: tuple[int, int], result: int) -> int:
    """The actor wrote the part: mark it done; the PCA is to be merged again."""
    mark_done(ctx.job.prism_pca_part(call[0]), ctx.stage_hash)
    ctx.parts["prism_pca"] = True
    return 1


def pca_finish(ctx: JobContext) -> int:
    """Merge the shards (in shard order) into ``prism/pca.npz`` when one was redone or the
    merged PCA is missing."""
    from ray_dissect.visualize.prism import PCAAccumulator

    if not ctx.parts.get("prism_pca") and ctx.job.prism_pca.exists():
        return 0
    n_shards = math.ceil(n_images(ctx) / ctx.spec.resources.shard_images)
    parts = [storage.load_npz(ctx.job.prism_pca_part(s)) for s in range(n_shards)]
    acc = PCAAccumulator.from_state(parts[0])
    for part in parts[1:]:
        acc.merge(PCAAccumulator.from_state(part))
    pca, layer = acc.finalize(), _spec(ctx.spec).layer
    ge_order = [name for name in reversed(parts[0]["order"].tolist()) if name != layer]
    storage.save_npz(ctx.job.prism_pca, mean=pca.mean, axes=pca.axes,
                     variance=pca.explained_variance_ratio,
                     n_samples=np.asarray(pca.n_samples, dtype=np.int64),
                     ge_order=np.asarray(ge_order, dtype=str))
    return 0


def load_pca(env_or_ctx: WorkEnv | JobContext) -> tuple[Any, list[str]]:
    """The merged :class:`PrismPCA` and the GE layers in application order."""
    from ray_dissect.visualize.prism import PrismPCA

    z = storage.load_npz(env_or_ctx.job.prism_pca)
    pca = PrismPCA(mean=z["mean"], axes=z["axes"], explained_variance_ratio=z["variance"],
                   n_samples=int(z["n_samples"]))
    return pca, [str(name) for name in z["ge_order"].tolist()]


def maps_work(env: WorkEnv, valid: np.ndarray, shard: int, n: int) -> int:
    """Project one shard on the PCA and keep its GE channel means; write them whole."""
    from ray_dissect.visualize.prism import project

    spec, (pca, order) = _spec(env.spec), load_pca(env)
    found: dict[str, list[np.ndarray]] = {name: [] for name in
                                          ["components", *map(ge_name, order)]}
    for _, _, out, ok in _shards(env, valid, shard, n):
        keep = ok.to(out[spec.layer].device)[:, None, None, None]
        found["components"].append((project(out[spec.layer], pca) * keep).cpu().numpy())
        for layer in order:
            means = out[layer].float().mean(dim=1, keepdim=True) * keep
            found[ge_name(layer)].append(means.cpu().numpy())
    for name, chunks in found.items():
        arrays.write_shard(env.job.prism_zarr, name, shard, env.spec.resources.shard_images,
                           np.concatenate(chunks).astype(np.float32))
    if spec.saliency == "gradcam":
        arrays.write_shard(env.job.prism_zarr, "gradcam", shard,
                           env.spec.resources.shard_images, saliency(env, valid, shard, n))
    classes, probs = predictions(env, valid, shard, n)
    shard_images = env.spec.resources.shard_images
    arrays.write_shard(env.job.prism_zarr, "top_classes", shard, shard_images, classes)
    arrays.write_shard(env.job.prism_zarr, "top_probs", shard, shard_images, probs)
    return shard


def saliency(env: WorkEnv, valid: np.ndarray, shard: int, n: int) -> np.ndarray:
    """(b, 1, h, w) float32 Grad-CAM of each predicted class at the PCA layer for the shard's
    images (zeros for unreadable ones)."""
    import torch

    from ray_dissect.visualize.attribution import AttributionRunner

    layer, res = _spec(env.spec).layer, env.spec.resources
    runner = AttributionRunner(env.model, layer, layout=env.spec.model.layouts.get(layer))
    start, stop = shard_range(shard, res.shard_images, n)
    chunks = []
    for b0 in range(start, stop, res.batch_size):
        b1 = min(b0 + res.batch_size, stop)
        images, _ = read_batch(env, b0, b1, [])
        x = torch.from_numpy(preprocess(images, env.spec.model.preprocess)).to(env.device)
        cam = runner.attribute(x, ["gradcam"], upsample=False)["gradcam"].cpu().numpy()
        chunks.append(cam[:, None] * np.asarray(valid[b0:b1], np.float32)[:, None, None, None])
    return np.concatenate(chunks).astype(np.float32)


TOP = 3
"""Predictions each PRISM input is titled with (TorchPRISM's top-3 softmax)."""


def predictions(env: WorkEnv, valid: np.ndarray, shard: int, n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The model's top-3 classes (b, 3) int64 and softmax probabilities (b, 3) float32 for the
    shard's images (one full forward each); -1 and NaN for unreadable images, or for every image
    when the model's output is not (batch, classes) logits (the page then shows none)."""
    from ray_dissect.errors import ModelError
    from ray_dissect.pipeline.stages.image_studies import model_input
    from ray_dissect.studies.hooks import decide, logits_of

    start, stop = shard_range(shard, env.spec.resources.shard_images, n)
    classes = np.full((stop - start, TOP), -1, dtype=np.int64)
    probs = np.full((stop - start, TOP), np.nan, dtype=np.float32)
    rows = np.flatnonzero(valid[start:stop])
    try:
        for b0 in range(0, len(rows), env.spec.resources.batch_size):
            batch = rows[b0:b0 + env.spec.resources.batch_size]
            p, _ = decide(logits_of(env.model, model_input(env, start + batch)))
            top = np.argsort(-p, axis=1, kind="stable")[:, :TOP]
            classes[batch, :top.shape[1]] = top
            probs[batch, :top.shape[1]] = np.take_along_axis(p, top, axis=1)
    except ModelError:
        classes[:], probs[:] = -1, np.nan
    return classes, probs


def _create(ctx: JobContext, name: str, shape: tuple[int, ...], dtype: str) -> None:
    res = ctx.spec.resources
    arrays.create_image_array(ctx.job.prism_zarr, name, shape, dtype, res.shard_images,
                              math.gcd(res.shard_images, CHUNK_IMAGES),
                              stage_hash=ctx.stage_hash)


def plan(ctx: JobContext) -> Plan | None:
    """Create the per-shard arrays; a shard is to do unless all of them have it."""
    spec = ctx.spec.analyses.prism
    if spec is None:
        return None
    n, (_, order) = n_images(ctx), load_pca(ctx)
    _, h, w = ctx.shapes[spec.layer]
    shapes = {"components": (n, 3, h, w)} | {ge_name(g): (n, 1, *ctx.shapes[g][1:])
                                              for g in order}
    if spec.saliency == "gradcam":
        shapes["gradcam"] = (n, 1, h, w)
    done = None
    dtypes = {"top_classes": "int64"}
    for name, shape in (shapes | {"top_classes": (n, TOP), "top_probs": (n, TOP)}).items():
        _create(ctx, name, shape, dtypes.get(name, "float32"))
        have = arrays.done_shards(ctx.job.prism_zarr, name)
        done = have if done is None else done & have
    return _plan_shards(ctx, lambda s: done is None or not done[s])


def collect(ctx: JobContext, call: tuple[int, int], result: int) -> int:
    """The actor wrote the shard's arrays; the joint maps are to be computed again."""
    ctx.parts["prism"] = True
    return 1


def joint_maps(ctx: JobContext) -> dict[str, np.ndarray]:
    """The whole set's joint outputs from the stored scores and GE means (valid images only
    enter the normalisation, the colour sets and the clustering; the others get fill rows)."""
    import torch

    from ray_dissect.visualize.prism import (
        DROPPED,
        cluster_presence,
        gradual_extrapolation,
        normalize_to_rgb,
        quantize,
        split_rgb,
    )

    spec, (pca, order), n = _spec(ctx.spec), load_pca(ctx), n_images(ctx)
    keep = ctx.valid_images[:n]
    stored = {name: arrays.open_array(ctx.job.prism_zarr, name)[:][keep]
              for name in ["components", *map(ge_name, order)]}
    scores = torch.from_numpy(stored["components"])
    quant = quantize(normalize_to_rgb(scores), spec.quantize)
    base = scores if spec.quantize == "none" else quant.rgb
    ge = [torch.from_numpy(stored[ge_name(g)]) for g in order]
    rgb = normalize_to_rgb(gradual_extrapolation(base, ge))
    kept = {"rgb": rgb.numpy(), "codes": quant.codes.numpy(), "presence": quant.presence.numpy()}
    fill: dict[str, Any] = {"rgb": 0.0, "codes": DROPPED, "presence": False}
    if spec.split_rgb:
        kept["split"], fill["split"] = split_rgb(rgb).numpy(), 0.0
    if spec.saliency == "gradcam":
        cams = arrays.open_array(ctx.job.prism_zarr, "gradcam")[:][keep]
        kept["alpha"], fill["alpha"] = alpha_channel(cams, (rgb.shape[2], rgb.shape[3])), 0.0
    if spec.clusters is not None:
        k = min(spec.clusters, int(keep.sum()))
        if k < spec.clusters:
            log.warning("PRISM: %d clusters asked, %d valid images: using %d", spec.clusters,
                        k, k)
        kept["clusters"] = cluster_presence(quant.presence, k, seed=spec.seed).labels
        fill["clusters"] = -1
    out = {name: _scatter(values, keep, fill[name]) for name, values in kept.items()}
    out["variance"] = pca.explained_variance_ratio.astype(np.float64)
    return out


def alpha_channel(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, 1, h, w) Grad-CAM maps -> (n, 1, H, W) float32 in [0, 1]: upsampled bilinearly
    (``align_corners=False``), min-max per image (TorchPRISM's ``--saliency=gradcam``)."""
    import torch
    import torch.nn.functional as F

    from ray_dissect.visualize.display import to_unit

    up = F.interpolate(torch.from_numpy(np.ascontiguousarray(cams, np.float32)), size=size,
                       mode="bilinear", align_corners=False)
    return to_unit(up.numpy()).astype(np.float32)


def _scatter(values: np.ndarray, keep: np.ndarray, fill: Any) -> np.ndarray:
    """Rows of the kept images back in place among all n, ``fill`` elsewhere."""
    out = np.full((len(keep), *values.shape[1:]), fill, dtype=values.dtype)
    out[keep] = values
    return out


def _write_joint(ctx: JobContext, name: str, values: np.ndarray) -> None:
    if name == "variance":  # not per image: one shard
        arrays.create_image_array(ctx.job.prism_zarr, name, values.shape, "float64",
                                  len(values), len(values))
        arrays.write_shard(ctx.job.prism_zarr, name, 0, len(values), values)
        return
    _create(ctx, name, values.shape, str(values.dtype))
    per = ctx.spec.resources.shard_images
    for shard in range(math.ceil(len(values) / per)):
        arrays.write_shard(ctx.job.prism_zarr, name, shard, per,
                           values[shard * per:(shard + 1) * per])


def joint_names(spec: PrismSpec) -> list[str]:
    """The arrays the driver writes (their done markers say the joint step is complete)."""
    return (["rgb", "codes", "presence", "variance"] + (["split"] if spec.split_rgb else [])
            + (["clusters"] if spec.clusters is not None else [])
            + (["alpha"] if spec.saliency == "gradcam" else []))


def finish(ctx: JobContext) -> int:
    """Compute and write the joint arrays when a shard was redone or one of them is missing."""
    spec = _spec(ctx.spec)
    complete = all(bool(d.size and d.all()) for d in
                   (arrays.done_shards(ctx.job.prism_zarr, name) for name in joint_names(spec)))
    if complete and not ctx.parts.get("prism") and not ctx.parts.get("prism_pca"):
        return 0
    for name, values in joint_maps(ctx).items():
        _write_joint(ctx, name, values)
    return 0


def _field(name: str) -> str:
    return f"job spec field 'analyses.{name}'"


def check(spec: JobSpec, info: ModelInfo) -> Shapes:
    """PRISM's layers exist, run once, the GE layers before the PCA layer, which has >= 3
    channels, and there are no more clusters than images; returns their output shapes
    (C, h, w)."""
    prism = spec.analyses.prism
    if prism is None:
        return {}
    names = {name for name, _ in info.model.named_modules() if name}
    for layer in (prism.layer, *prism.ge_layers):
        if layer not in names:
            raise SpecError(f"{_field('prism')}: {layer!r} is not a module of the model",
                            hint="see `ray-dissect layers JOB.yaml`")
    _check_order(info.model, spec, prism)
    shapes = {name: shape for name, shape, _ in
              probe_layers(info.model, spec.model.preprocess.size, [prism.layer,
                                                                     *prism.ge_layers])}
    if len(shapes[prism.layer]) != 3 or shapes[prism.layer][0] < 3:
        raise SpecError(f"{_field('prism.layer')}: {prism.layer!r} outputs "
                        f"{shapes[prism.layer]}", expected="(C, h, w) maps with C >= 3")
    covered = min(info.images, prism.limit)
    if prism.clusters is not None and prism.clusters > covered:
        raise SpecError(f"{_field('prism.clusters')}: {prism.clusters} clusters",
                        expected=f"at most the {covered} images PRISM covers")
    return shapes


def _check_order(model: Any, spec: JobSpec, prism: PrismSpec) -> None:
    """The GE layers run before the PCA layer."""
    from ray_dissect.models.truncate import call_order

    try:
        order = call_order(model, [prism.layer, *prism.ge_layers], spec.model.preprocess.size)
    except ModelError as err:
        raise SpecError(f"{_field('prism')}: {err.what}", hint=err.hint) from None
    if order[-1] != prism.layer:
        raise SpecError(f"{_field('prism.ge_layers')}: {order[-1]!r} runs after the PCA layer "
                        f"{prism.layer!r}", hint="GE layers lie between the input and `layer`")


def pca_covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """What the PCA depends on: its layer, the GE layers in use, the images covered."""
    prism = spec.analyses.prism
    if prism is None:
        return {"prism_pca": None}
    return {"prism_pca": {"layer": prism.layer, "ge_layers": ge_layers(prism),
                          "limit": prism.limit}}


def covers(data: dict[str, Any], spec: JobSpec) -> dict[str, Any]:
    """The whole ``analyses.prism`` section."""
    return {"prism": section(spec, "analyses", "prism")}


STAGES = (
    Stage(name="prism_pca", runs_on="actors", work=pca_work, plan=pca_plan, collect=pca_collect,
          finish=pca_finish, outputs=lambda job: (job.stage_dir("prism"),), covers=pca_covers,
          owns=("analyses",), check=check,
          used=uses("analyses", "prism")),
    Stage(name="prism", runs_on="actors", work=maps_work, plan=plan, collect=collect,
          finish=finish, outputs=lambda job: (job.prism_zarr,), covers=covers,
          owns=("analyses",), report=PRISM_PAGE,
          used=uses("analyses", "prism")),
)
