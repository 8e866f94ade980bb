"""``ray-dissect show``: a unit's map drawn on chosen images with the job's own model
(:mod:`ray_dissect.visualize.unit_maps`), the unit's threshold read from its record."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import layer_key
from ray_dissect.results.job import JobResults
from ray_dissect.storage import AnyPath
from ray_dissect.visualize.unit_maps import UnitView, read_rgb, unit_views


def views(job: JobResults, layer: str, unit: int, paths: Sequence[Path]) -> list[UnitView]:
    """Unit ``unit`` of the job's ``layer`` on each image file (threshold from its record,
    when the job wrote one)."""
    if layer not in job.layers:
        close = difflib.get_close_matches(layer, job.layers, n=1)
        raise SpecError(f"layer {layer!r} is not a layer of this job",
                        expected=f"one of {list(job.layers)}",
                        hint=f"did you mean {close[0]!r}?" if close else "see its spec.json")
    records = job.records(layer) if job.has_records(layer) else []
    threshold = next((r.threshold for r in records if r.unit == unit), None)
    return unit_views(job.spec.model, layer, unit, [read_rgb(p) for p in paths], threshold)


def show_unit(root: str | Path | AnyPath, layer: str, unit: int, paths: Sequence[Path],
              out: Path) -> list[Path]:
    """Write ``<layer>_<unit>_<image stem>.png`` (the heat overlay) and, with a threshold,
    ``..._mask.png`` (the image revealed where the unit fires) under ``out``; returns them."""
    from PIL import Image

    job = JobResults(root)
    written = []
    storage.makedirs(storage.location(out))
    for path, view in zip(paths, views(job, layer, unit, paths), strict=True):
        stem = f"{layer_key(layer)}_{unit}_{Path(path).stem}"
        pictures = [("", view.overlay)] + ([("_mask", view.revealed)]
                                           if view.revealed is not None else [])
        for suffix, picture in pictures:
            target = out / f"{stem}{suffix}.png"
            Image.fromarray(picture).save(target)
            written.append(target)
    return written
