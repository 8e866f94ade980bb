"""The report command on the shared Ray cluster: tiles rendered by Ray tasks, the same bytes
as an in-process build."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ray_dissect.cli import app
from ray_dissect.pipeline.table import build_report
from ray_dissect.results import open_job

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_report_command_renders_tiles_on_ray_as_in_process(tmp_path: Path) -> None:
    """`report DIR --out PATH` writes the site through Ray tasks; every tile and unit page
    equals an in-process build's."""
    from fixtures.report_job import dataset, run_job

    job = run_job(dataset(tmp_path / "ds", 16), tmp_path / "job", "color_levels", ["out"],
                  kind="clustered", clusters=3, length=2, beam=3)
    result = CliRunner().invoke(app, ["report", str(job), "--out", str(tmp_path / "ray")])
    assert result.exit_code == 0, result.output
    assert "report:" in result.stdout
    build_report(open_job(job), tmp_path / "local")
    ray_files = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*")
                       if p.suffix in (".jpg", ".webp", ".png") or p.parent.name == "out")
    assert ray_files and any(p.suffix == ".webp" for p in ray_files)
    for rel in ray_files:
        if (tmp_path / "ray" / rel).is_file():
            assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel
                                                             ).read_bytes(), rel


def test_visual_views_render_on_ray_as_in_process(tmp_path: Path) -> None:
    """With the visualisation stages, the receptive-field images drawn by Ray tasks and the
    attribution and PRISM pages equal an in-process build's, byte for byte."""
    from fixtures.visual_job import visual_job

    from ray_dissect.runtime.report import build_report_on_ray

    job = visual_job(tmp_path / "visual")
    build_report_on_ray(job, tmp_path / "ray")
    build_report(open_job(job), tmp_path / "local")
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*")
                   if p.is_file() and "_render" not in p.parts)
    assert any(p.name.endswith("_rf.png") for p in files)
    assert {"attribution.html", "prism.html"} <= {str(p) for p in files}
    for rel in files:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "local" / rel
                                                         ).read_bytes(), rel
