"""`ray-dissect status DIR`: the extraction stage's time breakdown."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.shard_pipeline import STEPS
from ray_dissect.pipeline.status import render_status
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")


def _run(root: Path, out: Path) -> None:
    run_stages(parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel",
                  "preprocess": {"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["pool"], "dataset": {"root": str(root)},
        "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}}), out)


def test_status_shows_the_manifest_breakdown(four_images: Path, tmp_path: Path) -> None:
    """After a run, status prints the activations stage's seconds per step, equal (to the
    printed digit) to the manifest's sums over both shards."""
    _run(four_images, tmp_path / "out")
    stages = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]
    breakdown = stages["activations"]["breakdown"]
    assert list(breakdown) == list(STEPS) and stages["concepts"]["breakdown"] is None
    (line,) = [ln for ln in render_status(tmp_path / "out").splitlines()
               if ln.startswith("activations ") and "decode" in ln]
    shown = dict(re.findall(r"(\w+) (\d+\.\d)", line))
    assert shown == {step: f"{seconds:.1f}" for step, seconds in breakdown.items()}


def test_manifest_without_breakdown_still_renders(four_images: Path, tmp_path: Path) -> None:
    """A manifest written before breakdowns existed loads; status shows no breakdown."""
    _run(four_images, tmp_path / "out")
    path = tmp_path / "out" / "manifest.json"
    data = json.loads(path.read_text())
    for state in data["stages"].values():
        del state["breakdown"]
    path.write_text(json.dumps(data))
    text = render_status(tmp_path / "out")
    assert "activations" in text and "breakdown" not in text
