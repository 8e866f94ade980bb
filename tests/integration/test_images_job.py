"""A folder of images with class subfolders and bad files, method none, through Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.photos import BAD, photo_folder, photo_job

from ray_dissect.pipeline.run import run_stages
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_images_job_through_ray_equals_in_process(tmp_path: Path) -> None:
    """On the cluster (actors and tasks) the job records the bad files and writes the same
    records, attribution maps, receptive fields and PRISM arrays as the in-process run."""
    root = photo_folder(tmp_path / "photos")
    spec = parse_spec(photo_job(
        root, analyses={"attribution": {"methods": ["saliency", "gradcam"], "layer": "features"},
                     "receptive_fields": {"layers": ["features"], "units": [0, 3], "top_k": 2,
                                          "occluder": 5, "stride": 3, "images_per_task": 1},
                     "prism": {"layer": "features.2", "ge_layers": ["features.1"],
                               "quantize": "exclusive", "clusters": 2}},
        resources={"actors": 2, "batch_size": 4, "shard_images": 4, "units_per_task": 3}))
    run_job(spec, tmp_path / "ray")
    run_stages(spec, tmp_path / "local")
    errors = [json.loads(x) for x in (tmp_path / "ray" / "errors.jsonl").read_text().split("\n")
              if x]
    assert sorted(e["image"] for e in errors) == list(BAD)
    for name in ("records/features.jsonl", "errors.jsonl"):
        assert (tmp_path / "ray" / name).read_text() == (tmp_path / "local" / name).read_text()
    for method in ("saliency", "gradcam"):
        np.testing.assert_array_equal(
            arrays.open_array(tmp_path / "ray" / "attribution.zarr", method)[:],
            arrays.open_array(tmp_path / "local" / "attribution.zarr", method)[:])
    for store, names in (("receptive_fields.zarr", ["features"]),
                         ("prism.zarr", ["components", "rgb", "codes", "presence", "variance",
                                         "clusters", "ge_features.1"])):
        for name in names:
            ray_array = arrays.open_array(tmp_path / "ray" / store, name)[:]
            assert ray_array.any(), (store, name)
            np.testing.assert_array_equal(
                ray_array, arrays.open_array(tmp_path / "local" / store, name)[:])
