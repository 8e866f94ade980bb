"""The progress tracker keeps the manifest current, time breakdowns included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ray_dissect
from ray_dissect.job.manifest import new_manifest, start_run
from ray_dissect.job.progress import QuietProgress, Tracker, process_age


def test_breakdowns_are_summed_per_stage(tmp_path: Path) -> None:
    """Two work units' breakdowns add up key by key in the manifest on disk; a stage that
    reports none keeps None."""
    tracker = Tracker(tmp_path, new_manifest("h", {"a": "x", "b": "y"}, "0"), QuietProgress())
    tracker.start("a", 2, 0)
    tracker.unit_done("a", 1, {"decode": 1.5, "write": 0.25})
    tracker.unit_done("a", 1, {"decode": 2.0, "wait": 1.0})
    stages = json.loads((tmp_path / "manifest.json").read_text())["stages"]
    assert stages["a"]["breakdown"] == pytest.approx({"decode": 3.5, "write": 0.25, "wait": 1.0})
    assert stages["a"]["done"] == 2 and stages["b"]["breakdown"] is None


def test_run_timings_add_up_and_survive_an_error(tmp_path: Path) -> None:
    """record adds to a key of the latest run's timings on disk; timed records a block that
    raises, and its seconds are at least the block's sleep."""
    manifest = new_manifest("h", {"a": "x"}, "0")
    start_run(manifest)
    tracker = Tracker(tmp_path, manifest, QuietProgress())
    tracker.record("a.plan", 0.25)
    tracker.record("a.plan", 0.5)
    with pytest.raises(ValueError), tracker.timed("slow"):
        time.sleep(0.05)
        raise ValueError("inside")
    timings = json.loads((tmp_path / "manifest.json").read_text())["runs"][-1]["timings"]
    assert list(timings) == ["a.plan", "slow"]
    assert timings["a.plan"] == pytest.approx(0.75) and timings["slow"] >= 0.05


def test_process_age_is_bounded_by_the_child_process_life() -> None:
    """In a child process that sleeps 0.3 s first, process_age is at least that sleep and at
    most the wall time the parent saw from launching the child to its exit."""
    code = ("import time; time.sleep(0.3); "
            "from ray_dissect.job.progress import process_age; print(process_age())")
    env = dict(os.environ, PYTHONPATH=str(Path(ray_dissect.__file__).parents[1]))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    wall = time.perf_counter() - t0
    assert 0.3 <= float(out) <= wall + 0.02  # + one clock tick of /proc's starttime


def test_process_age_is_none_without_proc(tmp_path: Path) -> None:
    """Where the stat file cannot be read, process_age says None."""
    assert process_age(tmp_path / "missing") is None
