"""A COCO dataset goes through the whole job like Broden does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.coco import IMAGES, write_coco
from PIL import Image

from ray_dissect.records.io import read_unit_records
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_red_unit_on_coco_is_labelled_car(tmp_path: Path) -> None:
    """Images painted red exactly on `car` annotations: the red unit's label is `car`."""
    from pycocotools.coco import COCO

    fix = write_coco(tmp_path / "coco")
    coco = COCO(str(fix.instances))
    car = next(c["id"] for c in coco.loadCats(coco.getCatIds()) if c["name"] == "car")
    for im in IMAGES:
        mask = np.zeros((im["height"], im["width"]), bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]], catIds=[car])):
            mask |= coco.annToMask(ann).astype(bool)
        rgb = np.zeros((im["height"], im["width"], 3), np.uint8)
        rgb[mask, 0] = 255
        Image.fromarray(rgb).save(fix.images / im["file_name"])
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel",
                  "preprocess": {"size": 16, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["pool"],
        "dataset": {"format": "coco", "root": str(fix.images),
                    "annotations": str(fix.instances), "mask_size": 8},
        "method": {"quantile": 0.08},
        "resources": {"actors": 1, "batch_size": 2, "shard_images": 2, "units_per_task": 1}})
    summary = run_job(spec, tmp_path / "out")
    (rec,) = read_unit_records(tmp_path / "out" / "records" / "pool.jsonl")
    assert rec.label is not None and rec.label.name == "car" and rec.label.iou > 0.6
    assert rec.per_category["supercategory"].name == "vehicle"
    assert summary.images == 4 and summary.bad_samples == 0
