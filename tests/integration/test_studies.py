"""The actor studies through Ray: model actors and CPU tasks give the in-process rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_ablation_and_blackout_through_ray_equal_in_process(tmp_path: Path) -> None:
    """Two actors over four shards (and IoU tasks over two blocks) write byte-identical
    unit_ablation and concept_blackout rows."""
    data = generate_dataset(tmp_path / "ds", 32, seed=5, image_size=32, mask_size=16)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:color_name_classifier",
                  "preprocess": {"size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["units.out"], "dataset": {"root": str(data)}, "method": {"quantile": 0.02},
        "studies": {"unit_ablation": {"single_units": True}, "concept_blackout": {}},
        "resources": {"actors": 2, "batch_size": 4, "shard_images": 8, "units_per_task": 2}})
    run_job(spec, tmp_path / "ray")
    run_stages(spec, tmp_path / "local")
    for name in ("unit_ablation", "concept_blackout"):
        ray_rows = (tmp_path / "ray" / "studies" / f"{name}.jsonl").read_text()
        assert ray_rows and ray_rows == (tmp_path / "local" / "studies" / f"{name}.jsonl"
                                         ).read_text()
