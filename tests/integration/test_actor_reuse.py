"""The model actors of a run are spawned once and reused by every actor stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures.photos import photo_folder, photo_job

from ray_dissect.pipeline.run import run_stages
from ray_dissect.runtime.actors import ActorPool
from ray_dissect.runtime.driver import execute_on_ray, run_job
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _counting_spawns(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The actors every ActorPool of this process starts, in order (spawns are counted where
    the driver asks Ray for a new ModelActor)."""
    spawned: list[Any] = []
    spawn = ActorPool._spawn

    def counted(self: ActorPool) -> Any:
        spawned.append(spawn(self))
        return spawned[-1]

    monkeypatch.setattr(ActorPool, "_spawn", counted)
    return spawned


def _timings(out: Path) -> dict[str, float]:
    return json.loads((out / "manifest.json").read_text())["runs"][-1]["timings"]


def test_activations_and_attribution_share_their_actors(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A job with two actor stages (activations, attribution) starts its 2 actors once, where
    one pool per stage starts 4, and both runs write the same records and attribution maps."""
    spec = parse_spec(photo_job(
        photo_folder(tmp_path / "photos"),
        analyses={"attribution": {"methods": ["saliency"], "layer": "features"}},
        resources={"actors": 2, "batch_size": 4, "shard_images": 4, "units_per_task": 3}))
    spawned = _counting_spawns(monkeypatch)
    run_job(spec, tmp_path / "reused")
    reused = len(set(spawned))
    run_stages(spec, tmp_path / "per_stage", execute_on_ray)
    assert (reused, len(set(spawned)) - reused) == (2, 4)
    assert "activations.actor_spawn" in _timings(tmp_path / "reused")
    assert "attribution.actor_spawn" not in _timings(tmp_path / "reused")
    assert "attribution.actor_spawn" in _timings(tmp_path / "per_stage")
    for name in ("records/features.jsonl", "errors.jsonl"):
        assert (tmp_path / "reused" / name).read_bytes() == \
            (tmp_path / "per_stage" / name).read_bytes()
    np.testing.assert_array_equal(
        arrays.open_array(tmp_path / "reused" / "attribution.zarr", "saliency")[:],
        arrays.open_array(tmp_path / "per_stage" / "attribution.zarr", "saliency")[:])
