"""The model actors of a run are spawned once and reused by every actor stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.photos import photo_folder, photo_job

from ray_dissect.pipeline.run import run_stages
from ray_dissect.runtime.driver import execute_on_ray, run_job
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _model_actors() -> int:
    """ModelActor actors the cluster has ever had (alive or dead), from Ray's state API."""
    from ray.util.state import list_actors

    return len(list_actors(filters=[("class_name", "=", "ModelActor")], limit=10_000,
                           raise_on_missing_output=False))


def _timings(out: Path) -> dict[str, float]:
    return json.loads((out / "manifest.json").read_text())["runs"][-1]["timings"]


def test_activations_and_attribution_share_their_actors(tmp_path: Path) -> None:
    """A job with two actor stages (activations, attribution) starts its 2 actors once, where
    one pool per stage starts 4, and both runs write the same records and attribution maps."""
    spec = parse_spec(photo_job(
        photo_folder(tmp_path / "photos"),
        analyses={"attribution": {"methods": ["saliency"], "layer": "features"}},
        resources={"actors": 2, "batch_size": 4, "shard_images": 4, "units_per_task": 3}))
    before = _model_actors()
    run_job(spec, tmp_path / "reused")
    between = _model_actors()
    run_stages(spec, tmp_path / "per_stage", execute_on_ray)
    assert (between - before, _model_actors() - between) == (2, 4)
    assert "activations.actor_spawn" in _timings(tmp_path / "reused")
    assert "attribution.actor_spawn" not in _timings(tmp_path / "reused")
    assert "attribution.actor_spawn" in _timings(tmp_path / "per_stage")
    for name in ("records/features.jsonl", "errors.jsonl"):
        assert (tmp_path / "reused" / name).read_bytes() == \
            (tmp_path / "per_stage" / name).read_bytes()
    np.testing.assert_array_equal(
        arrays.open_array(tmp_path / "reused" / "attribution.zarr", "saliency")[:],
        arrays.open_array(tmp_path / "per_stage" / "attribution.zarr", "saliency")[:])
