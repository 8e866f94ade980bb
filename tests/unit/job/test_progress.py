"""The progress tracker keeps the manifest current, time breakdowns included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ray_dissect.job.manifest import new_manifest
from ray_dissect.job.progress import QuietProgress, Tracker


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
