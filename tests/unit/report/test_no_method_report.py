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


def test_method_none_pages_have_no_concept_furniture(tmp_path: Path) -> None:
    """Without a dissection there is no IoU slider, no "below" badge, no "no label 0.00",
    no categories box, no "k/U units covering m concepts" line and no labels section, on
    the prerendered pages; the grid script is told to draw none of it either."""
    root = photo_folder(tmp_path / "photos")
    run_stages(parse_spec(photo_job(root)), tmp_path / "out")
    build_report(open_job(tmp_path / "out"))
    site = tmp_path / "out" / "report"
    page = (site / "layers" / "features.html").read_text()
    assert "units covering" not in page and "below" not in page and "no label" not in page
    for control in ('<label hidden>IoU &ge; <input id="min"', '<label hidden><input id="int"',
                    "<fieldset hidden><legend>categories</legend>"):
        assert control in page, control
    assert 'class="badge' not in page and 'class="lab"' not in page
    assert '"concepts":false' in (site / "data" / "features.js").read_text()
    unit = (site / "units" / "features" / "0.html").read_text()
    unit = unit[:unit.index("<summary>Raw record")]  # the raw JSON names every field
    assert "<h2>Labels</h2>" not in unit and "No label" not in unit and "threshold" not in unit
