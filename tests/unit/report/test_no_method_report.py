"""A job without dissection (method none, an image folder) still gets a report: cards for
every unit with their top images, and no labels or label plots."""

from __future__ import annotations

import re
from pathlib import Path

from fixtures.photos import photo_folder, photo_job

from ray_dissect.pipeline.run import run_stages
from ray_dissect.report import build_report
from ray_dissect.results import open_job
from ray_dissect.spec import parse_spec


def test_report_of_an_images_job(tmp_path: Path) -> None:
    """Index and layer page render; one card per unit; every card's top images are tiles."""
    root = photo_folder(tmp_path / "photos")
    spec = parse_spec(photo_job(root))
    run_stages(spec, tmp_path / "out")
    result = build_report(open_job(tmp_path / "out"))
    assert Path(str(result.index)).exists()
    page = (tmp_path / "out" / "report" / "layers" / "features.html").read_text()
    assert len(re.findall(r'data-unit="\d+"', page)) == 8
    assert set(re.findall(r'data-label="([^"]*)"', page)) <= {"", "none", "-"}
    assert 'aria-label="plots"' not in page  # no label-IoU plots without a dissection
    unit = (tmp_path / "out" / "report" / "units" / "features" / "0.html").read_text()
    assert "top activations" in unit and "<img" in unit
