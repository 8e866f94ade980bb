"""The attribution page (``attribution.html``, written when the attribution stage ran).

Per analysed image (the first :data:`ATTRIBUTION_SHOWN`): the image as the network saw it;
per target (one, or T with ``top_k`` / a list of classes) the class, its name and its softmax
probability, and each method's map as an overlay on the image (pytorch-grad-cam's
``show_cam_on_image`` formula, :func:`ray_dissect.visualize.attribution.overlay`); the Grad-CAM
crop of the first target (mask and cropped image); the feature maps of each stored layer as
grey images (the first :data:`FEATURE_SHOWN` channels); and once the first convolution's
filters. Job directories written before targets per image (3-D maps, no ``probabilities``,
no ``classes.json``) are shown as before.

Files, relative to the report root: ``attribution/<i>.png``, ``attribution/<i>_<method>.png``
(first target) or ``attribution/<i>_t<k>_<method>.png``, ``attribution/<i>_crop_mask.png``,
``attribution/<i>_crop.png``, ``attribution/<i>_features.png`` (default layer) or
``attribution/<i>_features_<l>.png`` (l-th of ``feature_layers``), ``attribution/weights.png``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import RayDissectError
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.pages import Site
from ray_dissect.report.pictures import image_name, network_image, picture, scale_for
from ray_dissect.report.visuals import complete
from ray_dissect.results import JobResults
from ray_dissect.storage import arrays

ATTRIBUTION_SHOWN = 32
"""Images shown on ``attribution.html`` (the first ones; the store holds them all)."""
FEATURE_COLUMNS = 16
FEATURE_SHOWN = 64
"""Channels of a layer drawn per image (the first ones)."""
WEIGHT_SIDE = 48
METHOD_TITLES = {"saliency": "saliency", "guided_backprop": "guided backprop", "cam": "CAM",
                 "gradcam": "Grad-CAM", "guided_gradcam": "guided Grad-CAM",
                 "integrated_gradients": "integrated gradients", "smoothgrad": "SmoothGrad",
                 "input_x_gradient": "input x gradient", "occlusion": "occlusion",
                 "gradcam_pp": "Grad-CAM++", "scorecam": "Score-CAM", "layercam": "LayerCAM"}


def folder_classes(results: JobResults) -> tuple[str, ...]:
    """The dataset's class names (an image folder's first-level subfolders, sorted, as
    torchvision's ImageFolder numbers them); empty when the dataset has none."""
    return tuple(getattr(results.dataset, "classes", ()) or ())


def class_names(results: JobResults) -> tuple[str, ...]:
    """Names of the model's output classes: those the stage recorded
    (``attribution/classes.json``), else (older job directories) :func:`names_for` the number
    of outputs of the model's last linear layer (else empty)."""
    recorded = results.root / "attribution" / "classes.json"
    if recorded.exists():
        return tuple(json.loads(storage.read_text(recorded)))
    try:
        from torch import nn

        from ray_dissect.models.build import build_model

        model = build_model(results.spec.model)
    except RayDissectError:
        return ()
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return names_for(results, linear[-1].out_features) if linear else ()


def names_for(results: JobResults, n: int) -> tuple[str, ...]:
    """Names of ``n`` output classes: the dataset's class folders when there are ``n``, else
    ImageNet's 1,000 (torchvision ships the list) for a 1,000-output head, else empty."""
    from ray_dissect.visualize.targets import class_names as names

    return names(n, None, folder_classes(results))


def image_class(results: JobResults, index: int) -> str:
    """The image's own class (its class folder), '' when the dataset has none."""
    labels, names = getattr(results.dataset, "labels", None), folder_classes(results)
    if labels is None or not names or int(labels[index]) < 0:
        return ""
    return names[int(labels[index])]


def target_text(target: int, names: tuple[str, ...]) -> str:
    """What a map explains: ``class t (name)``, or the regression target (-1)."""
    if target < 0:
        return "regression (the sum of all outputs)"
    return f"class {target}" + (f" ({names[target]})" if target < len(names) else "")


def _per_target(values: np.ndarray, extra: int) -> np.ndarray:
    """Stored (n, ...) with one target per image -> (n, 1, ...); (n, T, ...) unchanged."""
    return values[:, None] if values.ndim == 1 + extra else values


def _targets(store: Any, shown: int) -> tuple[np.ndarray, np.ndarray]:
    """(shown, T) int64 targets and (shown, T) float32 probabilities (NaN when not stored)."""
    targets = _per_target(arrays.open_array(store, "targets")[:shown], 0)
    if not complete(store, "probabilities"):
        return targets, np.full(targets.shape, np.nan, np.float32)
    return targets, _per_target(arrays.open_array(store, "probabilities")[:shown], 0)


def _feature_layers(results: JobResults) -> list[tuple[str, str, str]]:
    """(layer, store array, file suffix) of each stored feature-map layer."""
    spec = results.spec.analyses.attribution
    assert spec is not None
    if spec.feature_layers:
        return [(layer, f"feature_maps.{layer}", f"_{k}")
                for k, layer in enumerate(spec.feature_layers)]
    return [(spec.layer, "feature_maps", "")] if spec.layer else []


def attribution_context(site: Site, results: JobResults) -> dict[str, Any]:
    """Variables of ``attribution.html`` (writes its pictures)."""
    from ray_dissect.spec.analyses import GRADIENT_METHODS

    spec, store = results.spec.analyses.attribution, results.job.attribution_zarr
    assert spec is not None
    methods = [m for m in spec.methods if m in GRADIENT_METHODS and complete(store, m)]
    n_images = arrays.open_array(store, "targets").shape[0]
    shown = min(n_images, ATTRIBUTION_SHOWN)
    targets, probs = _targets(store, shown)
    stored: dict[str, Any] = {m: _per_target(arrays.open_array(store, m)[:shown], 2)
                              for m in methods}
    boxes = (arrays.open_array(store, "crop_boxes")[:shown] if complete(store, "crop_boxes")
             else None)
    feats = [(layer, arrays.open_array(store, name)[:shown], suffix)
             for layer, name, suffix in _feature_layers(results) if complete(store, name)]
    size, names, bad = results.spec.model.preprocess.size, class_names(results), \
        results.bad_images()
    page = _Page(site, results, size, stored, names)
    rows = [page.row(i, targets[i], probs[i]) | {
        "crop": page.crop(i, boxes, spec.crop_threshold) if i not in bad else None,
        "features": [] if i in bad else [page.features(i, *f) for f in feats],
        "bad": i in bad, "image_class": image_class(results, i)} for i in range(shown)]
    return {"rows": rows, "methods": [METHOD_TITLES.get(m, m) for m in methods],
            "n_images": n_images, "shown": shown, "layer": spec.layer,
            "threshold": spec.crop_threshold, "weights": _weights(site, results),
            "target_kind": _target_kind(spec.target), "names": names,
            "feature_shown": FEATURE_SHOWN}


def _target_kind(target: Any) -> str:
    if hasattr(target, "top_k"):
        return f"the {target.top_k} most probable classes of each image"
    if isinstance(target, tuple):
        return "classes " + ", ".join(map(str, target))
    return {"folder": "the class of each image's folder"}.get(str(target), str(target))


class _Page:
    """Writes one image's pictures."""

    def __init__(self, site: Site, results: JobResults, size: int, stored: dict[str, Any],
                 names: tuple[str, ...]) -> None:
        self.site, self.results, self.size, self.stored, self.names = (site, results, size,
                                                                       stored, names)
        self.images: dict[int, tuple[np.ndarray, bool]] = {}

    def image(self, i: int) -> tuple[np.ndarray, bool]:
        if i not in self.images:
            self.images = {i: network_image(self.results, i, self.size)}
        return self.images[i]

    def row(self, i: int, targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """The image, and per target its text, probability and overlays."""
        image, readable = self.image(i)
        name = image_name(self.results, i)
        return {"index": i, "name": name, "target": target_text(int(targets[0]), self.names),
                "image": picture(self.site, f"attribution/{i}.png", vt.rgb_png(image),
                                 image.shape, f"image {i}: {name}"),
                "targets": [self._target(i, k, int(t), float(p), image, readable)
                            for k, (t, p) in enumerate(zip(targets, probs, strict=True))]}

    def _target(self, i: int, k: int, target: int, prob: float, image: np.ndarray,
                readable: bool) -> dict[str, Any]:
        from ray_dissect.visualize.attribution import overlay

        text = target_text(target, self.names)
        stem = f"attribution/{i}_" if k == 0 else f"attribution/{i}_t{k}_"
        overlays = [] if not readable else [
            picture(self.site, f"{stem}{m}.png", vt.rgb_png(overlay(image, np.asarray(maps[i, k]))),
                    image.shape, f"{METHOD_TITLES.get(m, m)} of image {i} for {text}")
            for m, maps in self.stored.items()]
        return {"text": text, "probability": None if math.isnan(prob) else f"{100 * prob:.1f}%",
                "overlays": overlays}

    def crop(self, i: int, boxes: Any, threshold: float) -> dict[str, Any] | None:
        """The Grad-CAM crop of the first target: mask (normalised map >= threshold; outside
        dimmed) and the image cut to the stored box (None without Grad-CAM)."""
        gradcam = self.stored.get("gradcam")
        if gradcam is None:
            return None
        image, _ = self.image(i)
        heat = np.asarray(gradcam[i, 0], dtype=np.float64)
        low, span = float(heat.min()), float(heat.max() - heat.min())
        mask = ((heat - low) / span if span > vt.EPS else np.zeros_like(heat)) >= threshold
        out: dict[str, Any] = {"mask": picture(
            self.site, f"attribution/{i}_crop_mask.png", vt.rgb_png(vt.mask_image(mask, image)),
            image.shape, f"Grad-CAM mask of image {i} (>= {threshold:g})"), "image": None,
            "box": None}
        box = [int(v) for v in boxes[i]] if boxes is not None else [-1] * 4
        if box[0] >= 0:
            cut = image[box[0]:box[2], box[1]:box[3]]
            out["image"] = picture(self.site, f"attribution/{i}_crop.png", vt.rgb_png(cut),
                                   cut.shape, f"image {i} cropped to rows {box[0]}-{box[2]}, "
                                   f"columns {box[1]}-{box[3]}", scale=scale_for(image.shape))
            out["box"] = box
        return out

    def features(self, i: int, layer: str, maps: Any, suffix: str) -> dict[str, Any]:
        """The first :data:`FEATURE_SHOWN` grey maps of a layer on image i, in one grid."""
        chosen = np.asarray(maps[i][:FEATURE_SHOWN])
        grid = vt.grid(chosen, FEATURE_COLUMNS, 2, min_side=28)
        return picture(self.site, f"attribution/{i}_features{suffix}.png", vt.grey_png(grid),
                       grid.shape, f"{len(chosen)} of {maps.shape[1]} feature maps of {layer} "
                       f"on image {i}", scale=1) | {
            "layer": layer, "shown": len(chosen), "channels": int(maps.shape[1]),
            "size": " x ".join(map(str, maps.shape[2:]))}


def _weights(site: Site, results: JobResults) -> dict[str, Any] | None:
    """The first convolution's filters as one grid (``attribution/weights.npz``), or None."""
    path = results.root / "attribution" / "weights.npz"
    if not path.exists():
        return None
    filters = np.asarray(storage.load_npz(path)["weights"])  # (O, kh, kw, I) uint8
    grid = vt.grid(vt.filter_tiles(filters), 8, 2, min_side=WEIGHT_SIDE)
    data = vt.rgb_png(grid) if grid.ndim == 3 else vt.grey_png(grid)
    return picture(site, "attribution/weights.png", data, grid.shape,
                   f"{len(filters)} first-layer filters, each min-max scaled", scale=1) | {
        "n": len(filters), "shape": " x ".join(map(str, filters.shape[1:3])),
        "rgb": filters.shape[-1] == 3}
