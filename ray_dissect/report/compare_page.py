"""The visual section of ``ray-dissect compare``: two jobs side by side on one static page.

``TRAINED/studies/compare/index.html`` (no network, no scripts) shows, for job A (typically the
trained model) and job B (typically its random-init baseline, or any other model dissected on
the same dataset):

- each model's first convolution's filters (built from the job's spec, weights as loaded;
  :func:`ray_dissect.visualize.attribution.weights`: each filter min-max scaled over all its
  values; RGB when it has three input channels, else the mean over them);
- for the first N valid images of the dataset (readable, and unreadable in neither job), the
  image as the network saw it and each job's feature maps of its chosen layer (the first
  :data:`MAX_MAPS` units), each map min-max scaled
  (:func:`ray_dissect.report.visual_tiles.display`). The maps are read from the job's
  ``activations.zarr`` where the image's shard is done; otherwise they are computed with the
  job's model (:class:`ray_dissect.models.extract.Extractor`).

Files, relative to the page: ``a_filters.png``, ``b_filters.png``, ``image_<i>.png``,
``a_<i>.png``, ``b_<i>.png`` (PNG, fixed settings: the same inputs give the same bytes).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError
from ray_dissect.errors import SpecError, StoreError
from ray_dissect.job.layout import layer_key
from ray_dissect.report import visual_tiles as vt
from ray_dissect.report.pages import environment
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath, arrays

log = logging.getLogger(__name__)

DEFAULT_IMAGES = 4
MAX_MAPS = 64
"""Units shown per image and job (the first ones)."""
MAP_COLUMNS = 8
MAP_SIDE = 48
"""Feature maps smaller than this are enlarged (nearest, integer factor)."""
FILTER_SIDE = 32
PAD = 2
IMAGE_SIDE = 112


@dataclass(frozen=True)
class Side:
    """One job of the comparison and the layer whose maps are shown."""

    job: JobResults
    layer: str
    tag: str  # "a" or "b": the file prefix


def pick_layer(job: JobResults, layer: str | None) -> str:
    """``layer`` (default: the job's first dissected layer), checked against the job's layers.

    Raises:
        SpecError: the layer is not one the job dissected (with the closest name as a hint).
    """
    if layer is None:
        return job.layers[0]
    if layer not in job.layers:
        close = difflib.get_close_matches(layer, job.layers, n=1)
        raise SpecError(f"layer {layer!r} is not a layer of job {str(job.root)!r}",
                        expected=f"one of {list(job.layers)}",
                        hint=f"did you mean {close[0]!r}?" if close else "see its spec.json")
    return layer


def dataset_key(job: JobResults) -> tuple[str, str, str | None]:
    """(format, root, subset) of the job's dataset: what fixes its images and their order."""
    ds = job.spec.dataset
    return ds.format, str(getattr(ds, "root", "")), getattr(ds, "subset", None)


def check_same_dataset(a: JobResults, b: JobResults) -> None:
    """Raises SpecError when the two jobs did not dissect the same dataset."""
    if dataset_key(a) != dataset_key(b):
        raise SpecError("the two jobs use different datasets",
                        given=f"{dataset_key(a)} vs {dataset_key(b)}",
                        expected="the same format, root and subset",
                        hint="compare jobs dissected on the same images")


def first_valid(a: JobResults, b: JobResults, n: int) -> list[int]:
    """The first ``n`` dataset indices readable and unreadable in neither job's errors."""
    bad, found = a.bad_images() | b.bad_images(), list[int]()
    for index in range(len(a.dataset.samples)):
        if len(found) == n:
            break
        if index in bad:
            continue
        try:
            a.image(index)
        except BadSampleError:
            continue
        found.append(index)
    return found


def stored_maps(job: JobResults, layer: str, indices: list[int]) -> dict[int, np.ndarray]:
    """Stored activations (units, h, w) float32 of the indices whose shard is done."""
    try:
        arr = job.activations(layer)
    except StoreError:
        return {}
    done = arrays.done_shards(job.job.activations_zarr, layer_key(layer), verify=False)
    shard = int(arr.shards[0]) if getattr(arr, "shards", None) else int(arr.chunks[0])
    return {i: np.asarray(arr[i], np.float32) for i in indices
            if i // shard < done.size and done[i // shard]}


def computed_maps(job: JobResults, layer: str, indices: list[int]) -> dict[int, np.ndarray]:
    """The layer's maps (units, h, w) float32 computed with the job's model."""
    if not indices:
        return {}
    from ray_dissect.models.extract import Extractor

    log.info("computing %s maps of %d images with the model of %s", layer, len(indices),
             job.root)
    maps = Extractor(job.spec.model, [layer])([job.image(i) for i in indices])[layer]
    return {i: np.asarray(m, np.float32) for i, m in zip(indices, maps, strict=True)}


def layer_maps(side: Side, indices: list[int]) -> dict[int, tuple[np.ndarray, str]]:
    """Per index, the maps (units, h, w) float32 and where they came from."""
    stored = stored_maps(side.job, side.layer, indices)
    computed = computed_maps(side.job, side.layer, [i for i in indices if i not in stored])
    return {i: (stored[i], "stored activations") if i in stored
            else (computed[i], "computed with the model") for i in indices}


def filter_grid(filters: np.ndarray) -> np.ndarray:
    """(O, kh, kw, I) uint8 filters -> one grid, RGB when I is 3 (else the mean over I,
    grey), 8 a row, each enlarged to at least :data:`FILTER_SIDE`."""
    return vt.grid(vt.filter_tiles(filters), 8, PAD, min_side=FILTER_SIDE)


def map_grid(maps: np.ndarray) -> np.ndarray:
    """(units, h, w) float -> the first :data:`MAX_MAPS` maps, each min-max scaled, as one
    grey grid (H', W') uint8, :data:`MAP_COLUMNS` a row."""
    return vt.grid(vt.display(maps[:MAX_MAPS]), MAP_COLUMNS, PAD, min_side=MAP_SIDE)


def _put(out: AnyPath, name: str, data: bytes, shape: tuple[int, ...], alt: str
         ) -> dict[str, Any]:
    storage.write_bytes(out / name, data)
    return {"src": name, "width": int(shape[1]), "height": int(shape[0]), "alt": alt}


def _filters(out: AnyPath, side: Side) -> dict[str, Any]:
    from torch import nn

    from ray_dissect.models.build import build_model
    from ray_dissect.visualize.attribution import weights

    model = build_model(side.job.spec.model)
    conv = next(name for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    filters = weights(model, conv)
    grid = filter_grid(filters)
    data = vt.rgb_png(grid) if grid.ndim == 3 else vt.grey_png(grid)
    return _put(out, f"{side.tag}_filters.png", data, grid.shape,
                f"{len(filters)} filters of {conv}") | {
        "layer": conv, "n": len(filters), "shape": " x ".join(map(str, filters.shape[1:3])),
        "rgb": filters.shape[-1] == 3}


def _maps(out: AnyPath, side: Side, i: int, maps: np.ndarray, source: str) -> dict[str, Any]:
    grid = map_grid(maps)
    return _put(out, f"{side.tag}_{i}.png", vt.grey_png(grid), grid.shape,
                f"{side.layer} maps of image {i}") | {
        "shown": min(len(maps), MAX_MAPS), "units": len(maps),
        "shape": " x ".join(map(str, maps.shape[1:])), "source": source}


def _side(side: Side, out: AnyPath) -> dict[str, Any]:
    spec = side.job.spec.model
    return {"name": side.job.root.name, "root": str(side.job.root), "layer": side.layer,
            "model": f"{spec.name or spec.factory}, weights {spec.weights}",
            "filters": _filters(out, side)}


def _row(out: AnyPath, sides: tuple[Side, Side], i: int,
         maps: tuple[dict[int, tuple[np.ndarray, str]], ...]) -> dict[str, Any]:
    job = sides[0].job
    image = vt.network_view(job.view(i), job.spec.model.preprocess.size)
    scale = max(1, -(-IMAGE_SIDE // min(image.shape[:2])))
    name = job.dataset.samples[i].image
    pic = _put(out, f"image_{i}.png", vt.rgb_png(image), image.shape, f"image {i}: {name}")
    pic |= {"width": pic["width"] * scale, "height": pic["height"] * scale}
    return {"index": i, "name": name, "image": pic,
            "maps": [_maps(out, s, i, *m[i]) for s, m in zip(sides, maps, strict=True)]}


def write_compare_page(trained: str | AnyPath, baseline: str | AnyPath,
                       out: str | AnyPath | None = None, images: int = DEFAULT_IMAGES,
                       layer_a: str | None = None, layer_b: str | None = None) -> AnyPath:
    """Write the page (default ``TRAINED/studies/compare/index.html``); returns its path.

    Raises:
        SpecError: not job directories, different datasets, an unknown layer, images < 1.
    """
    if images < 1:
        raise SpecError("--images must be positive", given=images, expected=">= 1")
    a, b = JobResults(trained), JobResults(baseline)
    check_same_dataset(a, b)
    sides = (Side(a, pick_layer(a, layer_a), "a"), Side(b, pick_layer(b, layer_b), "b"))
    target = storage.location(out) if out else a.root / "studies" / "compare"
    storage.makedirs(target)
    indices = first_valid(a, b, images)
    maps = tuple(layer_maps(s, indices) for s in sides)
    html = environment().get_template("compare_visual.html").render(
        sides=[_side(s, target) for s in sides], max_maps=MAX_MAPS,
        rows=[_row(target, sides, i, maps) for i in indices],
        dataset=" ".join(str(v) for v in dataset_key(a) if v))
    storage.write_text(target / "index.html", html)
    return target / "index.html"
