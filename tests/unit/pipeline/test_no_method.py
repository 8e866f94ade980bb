"""Method ``none``: a folder of images (class subfolders, bad files) gets activations, top
images and attribution maps, and records without labels; no concept stage runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.photos import BAD, photo_folder, photo_job

from ray_dissect.errors import SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import arrays


def no_method_spec(root: Path) -> JobSpec:
    return parse_spec(photo_job(root, analyses={
        "attribution": {"methods": ["saliency", "gradcam"], "layer": "features"}}))


def test_images_job_without_dissection(tmp_path: Path) -> None:
    """Bad files are recorded and left out; records have top images equal to the dense top
    maxima and no labels; the attribution maps cover every image; no concept stage ran."""
    root = photo_folder(tmp_path / "photos")
    summary = run_stages(no_method_spec(root), tmp_path / "out")
    out = tmp_path / "out"
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["image"] for e in errors) == list(BAD)
    assert summary.images == 8 and summary.valid_images == 6 and summary.iou_threshold is None
    records = list(read_unit_records(out / "records" / "features.jsonl"))
    acts = arrays.open_array(out / "activations.zarr", "features")[:]
    bad = {i for i, name in enumerate(sorted(p.relative_to(root).as_posix()
                                             for p in root.rglob("*.png")))
           if name in BAD}
    valid = np.array([i not in bad for i in range(8)])
    assert len(records) == 8
    for rec in records:
        assert rec.label is None and rec.threshold is None and rec.top == []
        maxima = acts[:, rec.unit].reshape(8, -1).max(axis=1)
        order = sorted(np.flatnonzero(valid), key=lambda i: (-maxima[i], i))[:3]
        assert [t.index for t in rec.top_images] == order
    assert arrays.open_array(out / "attribution.zarr", "saliency").shape == (8, 16, 16)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert {s for s, st in stages.items() if st["computed"]} == {
        "activations", "attribution", "top_images"}


def test_concept_methods_still_refuse_an_images_dataset(tmp_path: Path) -> None:
    """Only method none accepts a dataset without concept labels."""
    root = photo_folder(tmp_path / "photos")
    spec = no_method_spec(root).model_copy(update={"method": parse_spec({
        "model": {"name": "resnet18"}, "layers": ["fc"], "dataset": {"root": "/"}}).method})
    with pytest.raises(SpecError, match="no concept labels"):
        run_stages(spec, tmp_path / "out")
