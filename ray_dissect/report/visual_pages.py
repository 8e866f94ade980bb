"""The attribution and PRISM pages (written by the report's driver when the stages ran).

``attribution.html`` shows, per analysed image (the first :data:`ATTRIBUTION_SHOWN`), the image
as the network saw it, each method's map as an overlay on it (pytorch-grad-cam's
``show_cam_on_image`` formula, :func:`ray_dissect.visualize.attribution.overlay`), the target
class, the Grad-CAM crop (mask and cropped image), the layer's feature maps as grey images, and
once the first convolution's filters. ``prism.html`` shows each image's PRISM colours (after
gradual extrapolation when it ran), the explained variance per component, and for quantised
runs the colours present in each image and the images grouped by cluster; with ``split_rgb``
each channel alone (Reds, Greens, Blues).

Files, relative to the report root: ``attribution/<i>.png``, ``attribution/<i>_<method>.png``,
``attribution/<i>_crop_mask.png``, ``attribution/<i>_crop.png``, ``attribution/<i>_features.png``,
``attribution/weights.png``; ``prism/<i>.png``, ``prism/<i>_rgb.png``, ``prism/<i>_colours.png``,
``prism/<i>_split<c>.png``.
All PNG (lossless), written with fixed settings (a rebuild writes the same bytes). Maps are
normalised for display only; the stores keep the raw values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.errors import RayDissectError
from ray_dissect.report import plots
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.pages import ReportPage, Site
from ray_dissect.report.visuals import complete, has_attribution, has_prism
from ray_dissect.results import JobResults
from ray_dissect.storage import arrays

ATTRIBUTION_SHOWN = 32
"""Images shown on ``attribution.html`` (the first ones; the store holds them all)."""
SHOWN_MIN = 112
"""Pictures smaller than this are shown enlarged (pixelated)."""
PRISM_BLOCK = 64
"""Images of ``prism.zarr``'s ``rgb`` read at once by the PRISM page (its memory bound)."""
FEATURE_COLUMNS = 16
WEIGHT_SIDE = 48
METHOD_TITLES = {"saliency": "saliency", "guided_backprop": "guided backprop", "cam": "CAM",
                 "gradcam": "Grad-CAM", "guided_gradcam": "guided Grad-CAM"}


def write_attribution_page(site: Site, results: JobResults) -> None:
    """Write ``attribution.html`` (and its pictures)."""
    site.page("attribution.html", "attribution.html", **attribution_context(site, results))


def write_prism_page(site: Site, results: JobResults) -> None:
    """Write ``prism.html`` (and its pictures)."""
    site.page("prism.html", "prism.html", **prism_context(site, results))


ATTRIBUTION_PAGE = ReportPage(href="attribution.html", title="attribution", line="stages",
                              present=has_attribution, write=write_attribution_page)
"""The attribution stage's page (when its maps are complete)."""
PRISM_PAGE = ReportPage(href="prism.html", title="PRISM", line="stages", present=has_prism,
                        write=write_prism_page)
"""The PRISM stages' page (when their maps are complete)."""


def _put(site: Site, rel: str, data: bytes) -> str:
    path = site.out / rel
    storage.makedirs(path.parent)
    storage.write_bytes(path, data)
    return rel


def _scale(shape: tuple[int, ...]) -> int:
    """The integer factor that shows a picture at least :data:`SHOWN_MIN` px on its short
    side."""
    return max(1, -(-SHOWN_MIN // max(1, min(int(shape[0]), int(shape[1])))))


def _picture(site: Site, rel: str, data: bytes, shape: tuple[int, ...], alt: str,
             scale: int | None = None) -> dict[str, Any]:
    """Write a PNG; what the template needs to show it (src, display size: ``scale`` times
    its size, default :func:`_scale`; alt)."""
    h, w = int(shape[0]), int(shape[1])
    scale = _scale(shape) if scale is None else scale
    return {"src": _put(site, rel, data), "width": w * scale, "height": h * scale, "alt": alt}


def _image(results: JobResults, index: int, size: int) -> tuple[np.ndarray, bool]:
    """Image ``index`` as the network saw it, (size, size, 3) uint8, and whether it was
    readable (an unreadable one is shown grey)."""
    try:
        return vt.network_view(results.image(index), size), True
    except BadSampleError:
        return np.full((size, size, 3), 128, np.uint8), False


def _name(results: JobResults, index: int) -> str:
    return results.dataset.samples[index].image


IMAGENET_CLASSES = 1000


def folder_classes(results: JobResults) -> tuple[str, ...]:
    """The dataset's class names (an image folder's first-level subfolders, sorted, as
    torchvision's ImageFolder numbers them); empty when the dataset has none."""
    return tuple(getattr(results.dataset, "classes", ()) or ())


def class_names(results: JobResults) -> tuple[str, ...]:
    """Names of the model's output classes when known (see :func:`names_for`), from the
    number of outputs of its last linear layer (empty: numbers only)."""
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
    names = folder_classes(results)
    if len(names) == n:
        return names
    if n == IMAGENET_CLASSES:
        from torchvision.models import ResNet18_Weights

        return tuple(ResNet18_Weights.DEFAULT.meta["categories"])
    return ()


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


def attribution_context(site: Site, results: JobResults) -> dict[str, Any]:
    """Variables of ``attribution.html`` (writes its pictures)."""
    from ray_dissect.spec.analyses import GRADIENT_METHODS

    spec, store = results.spec.analyses.attribution, results.job.attribution_zarr
    assert spec is not None
    methods = [m for m in spec.methods if m in GRADIENT_METHODS and complete(store, m)]
    targets = arrays.open_array(store, "targets")[:]
    shown = min(len(targets), ATTRIBUTION_SHOWN)
    stored: dict[str, Any] = {m: arrays.open_array(store, m)[:shown] for m in methods}
    boxes = (arrays.open_array(store, "crop_boxes")[:shown] if complete(store, "crop_boxes")
             else None)
    feats = (arrays.open_array(store, "feature_maps")[:shown]
             if complete(store, "feature_maps") else None)
    size, names, bad = results.spec.model.preprocess.size, class_names(results), \
        results.bad_images()
    rows = [_attribution_row(site, results, i, size, stored, boxes, feats, spec.crop_threshold)
            | {"target": target_text(int(targets[i]), names), "bad": i in bad,
               "image_class": image_class(results, i)}
            for i in range(shown)]
    return {"rows": rows, "methods": [METHOD_TITLES.get(m, m) for m in methods],
            "n_images": len(targets), "shown": shown, "layer": spec.layer,
            "threshold": spec.crop_threshold, "weights": _weights(site, results),
            "target_kind": spec.target, "names": names}


def _attribution_row(site: Site, results: JobResults, i: int, size: int,
                     stored: dict[str, Any], boxes: Any, feats: Any, threshold: float
                     ) -> dict[str, Any]:
    """One image's pictures: the image, an overlay per method, the crop, the feature maps."""
    from ray_dissect.visualize.attribution import overlay

    image, readable = _image(results, i, size)
    name = _name(results, i)
    row: dict[str, Any] = {"index": i, "name": name, "image": _picture(
        site, f"attribution/{i}.png", vt.rgb_png(image), image.shape, f"image {i}: {name}"),
        "overlays": [], "crop": None, "features": None}
    if not readable:  # its maps are zeros: nothing to show
        return row
    row["overlays"] = [_picture(site, f"attribution/{i}_{m}.png",
                                vt.rgb_png(overlay(image, np.asarray(maps[i]))), image.shape,
                                f"{METHOD_TITLES.get(m, m)} of image {i} over the image")
                       for m, maps in stored.items()]
    row["crop"] = _crop(site, i, image, stored.get("gradcam"), boxes, threshold)
    if feats is not None:
        grid = vt.grid(np.asarray(feats[i]), FEATURE_COLUMNS, 2, min_side=28)
        row["features"] = _picture(site, f"attribution/{i}_features.png", vt.grey_png(grid),
                                   grid.shape, f"{feats.shape[1]} feature maps of image {i}",
                                   scale=1)
    return row


def _crop(site: Site, i: int, image: np.ndarray, gradcam: Any, boxes: Any, threshold: float
          ) -> dict[str, Any] | None:
    """The Grad-CAM crop: mask (normalised map >= threshold; outside dimmed) and the image
    cropped to the stored box (None without Grad-CAM; no image when the mask is empty)."""
    if gradcam is None:
        return None
    heat = np.asarray(gradcam[i], dtype=np.float64)
    low, span = float(heat.min()), float(heat.max() - heat.min())
    mask = ((heat - low) / span if span > vt.EPS else np.zeros_like(heat)) >= threshold
    out: dict[str, Any] = {"mask": _picture(
        site, f"attribution/{i}_crop_mask.png", vt.rgb_png(vt.mask_image(mask, image)),
        image.shape, f"Grad-CAM mask of image {i} (>= {threshold:g})"), "image": None,
        "box": None}
    box = [int(v) for v in boxes[i]] if boxes is not None else [-1] * 4
    if box[0] >= 0:
        cut = image[box[0]:box[2], box[1]:box[3]]
        out["image"] = _picture(site, f"attribution/{i}_crop.png", vt.rgb_png(cut), cut.shape,
                                f"image {i} cropped to rows {box[0]}-{box[2]}, "
                                f"columns {box[1]}-{box[3]}", scale=_scale(image.shape))
        out["box"] = box
    return out


def _weights(site: Site, results: JobResults) -> dict[str, Any] | None:
    """The first convolution's filters as one grid (``attribution/weights.npz``), or None."""
    path = results.root / "attribution" / "weights.npz"
    if not path.exists():
        return None
    filters = np.asarray(storage.load_npz(path)["weights"])  # (O, kh, kw, I) uint8
    grid = vt.grid(vt.filter_tiles(filters), 8, 2, min_side=WEIGHT_SIDE)
    data = vt.rgb_png(grid) if grid.ndim == 3 else vt.grey_png(grid)
    return _picture(site, "attribution/weights.png", data, grid.shape,
                    f"{len(filters)} first-layer filters, each min-max scaled", scale=1) | {
        "n": len(filters), "shape": " x ".join(map(str, filters.shape[1:3])),
        "rgb": filters.shape[-1] == 3}


def prism_context(site: Site, results: JobResults) -> dict[str, Any]:
    """Variables of ``prism.html`` (writes its pictures)."""
    spec, store = results.spec.analyses.prism, results.job.prism_zarr
    assert spec is not None
    rgb = arrays.open_array(store, "rgb")  # (images, 3, H, W) float32, read a block at a time
    variance = np.asarray(arrays.open_array(store, "variance")[:], np.float64)
    quantised = spec.quantize != "none" and complete(store, "presence")
    presence = arrays.open_array(store, "presence")[:] if quantised else None
    clusters = (arrays.open_array(store, "clusters")[:]
                if spec.clusters is not None and complete(store, "clusters") else None)
    split = (arrays.open_array(store, "split")[:] if spec.split_rgb and complete(store, "split")
             else None)
    size, bad = results.spec.model.preprocess.size, results.bad_images()
    top = _predictions(results, store)
    rows = [_prism_row(site, results, i, size, image_rgb, presence) | {"bad": i in bad}
            | {"split": _split(site, i, split), "top": top.get(i, "")}
            for i, image_rgb in _by_block(rgb)]
    groups = [] if clusters is None else [
        {"cluster": int(c), "rows": [rows[i] for i in np.flatnonzero(clusters == c)]}
        for c in sorted(set(clusters.tolist())) if c >= 0]
    return {"rows": rows, "empty": _no_common_colour(spec.quantize, presence, bad),
            "variance": [(k, f"{v:.6f}", f"{100 * v:.2f}") for k, v in
                                       enumerate(variance.tolist())],
            "bars": _variance_svg(variance), "spec": spec, "quantised": quantised,
            "groups": groups, "ge": spec.gradual_extrapolation and bool(spec.ge_layers),
            "ge_layers": ", ".join(spec.ge_layers), "rgb_shape": " x ".join(
                map(str, rgb.shape[2:]))}


def _predictions(results: JobResults, store: Any) -> dict[int, str]:
    """Per image, its top-3 predictions as 'name 0.93 · name 0.04 · ...' (class names when
    known, else numbers); {} for jobs without them (older jobs, models without logits)."""
    if not complete(store, "top_classes"):
        return {}
    classes = arrays.open_array(store, "top_classes")[:]
    probs = arrays.open_array(store, "top_probs")[:]
    names = class_names(results)
    out = {}
    for i, (row, p) in enumerate(zip(classes, probs, strict=True)):
        shown = [f"{names[c] if c < len(names) else f'class {c}'} {q:.2f}"
                 for c, q in zip(row.tolist(), p.tolist(), strict=True) if c >= 0]
        if shown:
            out[i] = " · ".join(shown)
    return out


def _no_common_colour(mode: str, presence: Any, bad: Any) -> int | None:
    """With ``inclusive``, the number of valid images when no colour is common to all of them
    (every map is then black), else None."""
    if mode != "inclusive" or presence is None:
        return None
    valid = [i for i in range(len(presence)) if i not in bad]
    return None if np.asarray(presence)[valid].any() else len(valid)


def _by_block(array: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(i, array[i]) for every first index, reading :data:`PRISM_BLOCK` items at a time."""
    for b0 in range(0, array.shape[0], PRISM_BLOCK):
        yield from enumerate(array[b0:b0 + PRISM_BLOCK], start=b0)


def _prism_row(site: Site, results: JobResults, i: int, size: int, rgb: np.ndarray,
               presence: Any) -> dict[str, Any]:
    image, _ = _image(results, i, size)
    name, colours = _name(results, i), vt.to_uint8_rgb(rgb)
    row: dict[str, Any] = {"index": i, "name": name, "colours": None, "codes": [], "image":
                           _picture(site, f"prism/{i}.png", vt.rgb_png(image), image.shape,
                                    f"image {i}: {name}"),
                           "rgb": _picture(site, f"prism/{i}_rgb.png", vt.rgb_png(colours),
                                           colours.shape, f"PRISM colours of image {i}")}
    if presence is not None:
        codes = [int(c) for c in np.flatnonzero(presence[i])]
        sw = vt.swatches(codes)
        row["codes"] = [(c, "rgb({},{},{})".format(*vt.code_rgb(c))) for c in codes]
        row["colours"] = _picture(site, f"prism/{i}_colours.png", vt.rgb_png(sw), sw.shape,
                                  f"{len(codes)} quantised colours present in image {i}",
                                  scale=1)
    return row


def _split(site: Site, i: int, split: Any) -> list[dict[str, Any]]:
    """The split-RGB panels of image ``i`` (red, green, blue channel alone), [] without."""
    if split is None:
        return []
    return [_picture(site, f"prism/{i}_split{c}.png", vt.rgb_png(panel), panel.shape,
                     f"PRISM {name} channel of image {i} alone")
            for c, name in enumerate(("red", "green", "blue"))
            for panel in [vt.to_uint8_rgb(np.asarray(split[i, c]))]]


def _variance_svg(variance: np.ndarray, shown: int = 10) -> str:
    """Bars of the first ``shown`` explained-variance ratios (PC0 first), inline SVG."""
    values = variance[:shown].tolist()
    bar, gap, height = 28.0, 6.0, 120.0
    peak = max(max(values, default=0.0), 1e-12)
    body = []
    for k, v in enumerate(values):
        h, x = height * v / peak, 30 + k * (bar + gap)
        body.append(plots._rect(x, 10 + height - h, bar, h, plots.BAR_COLOR))
        body.append(plots._text(x + bar / 2, height + 24, f"PC{k}",
                                ' text-anchor="middle" class="tick"'))
    desc = "; ".join(f"PC{k} {v:.4f}" for k, v in enumerate(values))
    return plots._svg(30 + len(values) * (bar + gap) + 10, height + 32,
                      "Explained variance ratio per principal component", desc, body)
