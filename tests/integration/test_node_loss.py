"""A worker node removed mid-extraction: the job completes with identical results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_worker_node_removed_mid_extraction(generated: Path, tmp_path: Path) -> None:
    """Actors on the lost node are replaced elsewhere; records equal an undisturbed run."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:slow_mixed_units",
                  "preprocess": {"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["inner.pool"], "dataset": {"root": str(generated)},
        "resources": {"actors": 2, "batch_size": 8, "shard_images": 16, "units_per_task": 8,
                      "actor_resources": {"extract": 1}, "cpus_per_actor": 0.5}})
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("node_loss_job.py")),
         str(tmp_path / "spec.json"), str(tmp_path / "lossy")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    local = parse_spec({**spec.model_dump(mode="json"),
                        "resources": {**spec.resources.model_dump(mode="json"),
                                      "actor_resources": {}}})
    run_job(local, tmp_path / "local")
    for path in sorted((tmp_path / "local" / "records").glob("*.jsonl")):
        assert (tmp_path / "lossy" / "records" / path.name).read_bytes() == path.read_bytes()
