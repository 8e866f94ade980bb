"""`ray-dissect status DIR`: the extraction stage's time breakdown and the run's fixed costs."""

from __future__ import annotations

import json
import re
import time
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


class _SlowSession:
    """Stands in for a Ray session: 0.05 s to open and 0.05 s to close."""

    def __enter__(self) -> None:
        time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)


def test_run_records_its_fixed_costs_and_status_shows_them(four_images: Path,
                                                           tmp_path: Path) -> None:
    """An in-process run records its start-up (process, preflight, prepare, the session's
    opening and closing, which take at least their sleeps) and per-stage costs (plan, time
    to the first result, the model load, finish); status prints each of them, rounded."""
    out = tmp_path / "out"
    run_stages(parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel",
                  "preprocess": {"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["pool"], "dataset": {"root": str(four_images)},
        "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}}), out,
        session=_SlowSession)
    timings = json.loads((out / "manifest.json").read_text())["runs"][-1]["timings"]
    assert list(timings)[:4] == ["process", "preflight", "prepare", "ray_init"]
    assert timings["ray_init"] >= 0.05 and timings["ray_shutdown"] >= 0.05
    for key in ("concepts.plan", "concepts.start", "concepts.finish", "activations.start",
                "activations.model_load", "scoring.start", "results"):
        assert key in timings, key
    text = render_status(out)
    shown = {f"{group}.{step}" if group != "run" else step: value
             for line in text.split("fixed costs")[1].splitlines()[1:]
             for group in [line.split()[0]]
             for step, value in re.findall(r"(\w+) (\d+\.\d\d)", line)}
    assert shown == {key: f"{seconds:.2f}" for key, seconds in timings.items()}


def test_manifest_without_timings_still_renders(four_images: Path, tmp_path: Path) -> None:
    """A manifest whose runs predate timings loads; status shows no fixed-cost section."""
    _run(four_images, tmp_path / "out")
    path = tmp_path / "out" / "manifest.json"
    data = json.loads(path.read_text())
    for run in data["runs"]:
        del run["timings"]
    path.write_text(json.dumps(data))
    assert "fixed costs" not in render_status(tmp_path / "out")


def test_status_lists_only_the_stages_the_spec_uses(four_images: Path, tmp_path: Path) -> None:
    """A NetDissect job with one study: status lists exactly the stages whose plan ran (a
    planned stage has work units in the manifest; a skipped one has none), in order; a
    changed-spec refusal's "reusing" list names only stages this job has."""
    import pytest

    from ray_dissect.errors import SpecError
    from ray_dissect.pipeline.table import stage_names

    data = {"model": {"factory": f"{PLANTED}:red_channel",
                      "preprocess": {"size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}},
            "layers": ["pool"], "dataset": {"root": str(four_images)},
            "studies": {"threshold_sweep": {"quantiles": [0.1]}},
            "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}}
    run_stages(parse_spec(data), tmp_path / "out")
    stages = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]
    ran = [name for name in stage_names() if stages[name]["total"] > 0]
    table = render_status(tmp_path / "out").splitlines()
    start = next(i for i, line in enumerate(table) if line.startswith("stage "))
    listed = [line.split()[0] for line in table[start + 1:]
              if line.split()[:1] and line.split()[0] in stage_names() and "/" in line]
    assert listed == ran and "threshold_sweep" in ran and "attribution" not in ran
    changed = {**data, "method": {"quantile": 0.2}}
    with pytest.raises(SpecError) as err:
        run_stages(parse_spec(changed), tmp_path / "out")
    reusing = str(err.value).split("reusing: ")[1].split(")")[0].split(", ")
    assert reusing and set(reusing) <= set(ran)
