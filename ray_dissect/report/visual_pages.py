"""The attribution and PRISM pages (written by the report's driver when the stages ran).

``attribution.html``: see :mod:`ray_dissect.report.attribution_page`. ``prism.html`` shows
each image's PRISM colours (after gradual extrapolation when it ran), the explained variance
per component, and for quantised runs the colours present in each image and the images grouped
by cluster; with ``split_rgb`` each channel alone (Reds, Greens, Blues).

Files, relative to the report root: ``prism/<i>.png``, ``prism/<i>_rgb.png``,
``prism/<i>_colours.png``, ``prism/<i>_split<c>.png``.
All PNG (lossless), written with fixed settings (a rebuild writes the same bytes). Maps are
normalised for display only; the stores keep the raw values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ray_dissect.report import plots
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.attribution_page import attribution_context, class_names, names_for
from ray_dissect.report.pages import ReportPage, Site
from ray_dissect.report.pictures import image_name, network_image, picture
from ray_dissect.report.visuals import complete, has_attribution, has_prism
from ray_dissect.results import JobResults
from ray_dissect.storage import arrays

__all__ = ["ATTRIBUTION_PAGE", "PRISM_PAGE", "class_names", "names_for", "prism_context"]

PRISM_BLOCK = 64
"""Images of ``prism.zarr``'s ``rgb`` read at once by the PRISM page (its memory bound)."""


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
    alpha = (arrays.open_array(store, "alpha") if spec.saliency == "gradcam"
             and complete(store, "alpha") else None)
    rows = [_prism_row(site, results, i, size, image_rgb, presence) | {"bad": i in bad}
            | {"split": _split(site, i, split), "top": top.get(i, ""),
               "rgba": _rgba(site, i, image_rgb, alpha)}
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
    image, _ = network_image(results, i, size)
    name, colours = image_name(results, i), vt.to_uint8_rgb(rgb)
    row: dict[str, Any] = {"index": i, "name": name, "colours": None, "codes": [], "image":
                           picture(site, f"prism/{i}.png", vt.rgb_png(image), image.shape,
                                    f"image {i}: {name}"),
                           "rgb": picture(site, f"prism/{i}_rgb.png", vt.rgb_png(colours),
                                           colours.shape, f"PRISM colours of image {i}")}
    if presence is not None:
        codes = [int(c) for c in np.flatnonzero(presence[i])]
        sw = vt.swatches(codes)
        row["codes"] = [(c, "rgb({},{},{})".format(*vt.code_rgb(c))) for c in codes]
        row["colours"] = picture(site, f"prism/{i}_colours.png", vt.rgb_png(sw), sw.shape,
                                  f"{len(codes)} quantised colours present in image {i}",
                                  scale=1)
    return row


def _rgba(site: Site, i: int, rgb: np.ndarray, alpha: Any) -> dict[str, Any] | None:
    """PRISM fused with Grad-CAM: image ``i``'s colours with its ``alpha`` channel as an
    RGBA picture (None without ``saliency: gradcam``)."""
    if alpha is None:
        return None
    colours = vt.to_uint8_rgb(rgb)
    return picture(site, f"prism/{i}_rgba.png", vt.rgba_png(colours, np.asarray(alpha[i, 0])),
                   colours.shape, f"PRISM colours of image {i} with its Grad-CAM as alpha")


def _split(site: Site, i: int, split: Any) -> list[dict[str, Any]]:
    """The split-RGB panels of image ``i`` (red, green, blue channel alone), [] without."""
    if split is None:
        return []
    return [picture(site, f"prism/{i}_split{c}.png", vt.rgb_png(panel), panel.shape,
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
