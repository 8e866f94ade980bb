"""A job with ``preprocess.resize`` (resize-then-centre-crop): a concept that sits only in the
cropped-out margin labels no unit, while one in the crop still does, and the concept index
holds the cropped masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.broden import Row, write_broden
from fixtures.report_job import PLANTED, RAW

from ray_dissect.models.crop import crop_masks
from ray_dissect.pipeline.run import run_stages
from ray_dissect.results import JobResults
from ray_dissect.spec import parse_spec

RED, BLUE = 1, 2


def _rows(n: int) -> list[Row]:
    """32 x 64 images: red only in the outer 12 columns each side, blue in the middle (its
    width varies per image), grey elsewhere, colours with seeded noise (distinct activation
    values); masks at 16 x 32."""
    rows, rng = [], np.random.default_rng(5)
    for k in range(n):
        image = np.full((32, 64, 3), 128, np.uint8)
        mask = np.zeros((16, 32), np.int32)
        image[:, :12], image[:, 52:] = (230, 20, 20), (230, 20, 20)
        mask[:, :6], mask[:, 26:] = RED, RED
        b0, b1 = 24 - 2 * (k % 3), 40 + 2 * (k % 2)
        image[:, b0:b1] = (20, 20, 230)
        image[..., :] = np.clip(image.astype(int) + rng.integers(-20, 21, image.shape), 0, 255)
        mask[:, b0 // 2:b1 // 2] = BLUE
        rows.append(Row(image, layers={"color": [mask]}))
    return rows


def _run(data: Path, out: Path, resize: int | None) -> JobResults:
    pre = {"size": 32, **RAW, **({"resize": resize} if resize else {})}
    spec = parse_spec({"name": out.name, "model": {"factory": f"{PLANTED}:color_detectors",
                                                   "preprocess": pre},
                       "layers": ["pool"], "dataset": {"root": str(data)},
                       "resources": {"batch_size": 8, "shard_images": 8, "units_per_task": 4}})
    run_stages(spec, out)
    return JobResults(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    labels = {RED: ("red", {"color": 1.0}), BLUE: ("blue", {"color": 1.0})}
    return write_broden(tmp_path_factory.mktemp("crop") / "b", _rows(8), labels)


def test_a_concept_in_the_cropped_margin_labels_no_unit(data: Path, tmp_path: Path) -> None:
    """Without the crop the red detector (unit 0) is labelled red; with resize 32 + crop 32
    (the central 32 columns of 64) red is cut out of every input and every mask: unit 0 gets
    no red label, while the blue detector (unit 2) is blue either way."""
    whole = _run(data, tmp_path / "whole", None)
    crop = _run(data, tmp_path / "crop", 32)
    labels = {name: {r.unit: r.label.name if r.label else None for r in job.records("pool")}
              for name, job in (("whole", whole), ("crop", crop))}
    assert labels["whole"][0] == "red" and labels["whole"][2] == "blue"
    assert labels["crop"][0] != "red" and labels["crop"][2] == "blue"
    assert all("red" not in [c.name for c in r.top if c.iou > 0] for r in crop.records("pool"))


def test_report_views_and_labels_are_the_crop(data: Path, tmp_path: Path) -> None:
    """The report's image and labels of a cropped job are the centre crop: the (32, 32) image
    of the input's columns 16-47 and the masks cropped alike (no red left)."""
    job = _run(data, tmp_path / "crop", 32)
    view = job.view(0)
    assert view.shape == (32, 32, 3)
    np.testing.assert_array_equal(view, job.image(0)[:, 16:48])
    pixel, _ = job.labels(0)
    np.testing.assert_array_equal(pixel, crop_masks(job.dataset.read_labels(0)[0], (32, 64),
                                                    32, 32))
    assert RED not in pixel and BLUE in pixel
