"""The attribution page of a job directory written before targets per image (one target,
no probabilities, no recorded class names) still opens and shows its targets."""

from __future__ import annotations

import shutil
from pathlib import Path

from fixtures.photos import photo_folder, photo_job

from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.table import build_report
from ray_dissect.results import JobResults
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays


def test_old_job_directory_page_shows_targets_without_probabilities(tmp_path: Path) -> None:
    """With ``probabilities`` and ``classes.json`` removed (as before they existed) the page
    shows each readable image's stored class and no probability; with them, it shows both."""
    root = photo_folder(tmp_path / "photos")
    spec = photo_job(root, analyses={"attribution": {"methods": ["saliency", "gradcam"],
                                                     "layer": "features"}})
    job = tmp_path / "out"
    run_stages(parse_spec(spec), job)
    store = job / "attribution.zarr"
    targets = arrays.open_array(store, "targets")[:]
    assert targets.shape == (8,) and arrays.open_array(store, "saliency").shape == (8, 16, 16)
    new = (job / "report" / "attribution.html")
    build_report(JobResults(job), job / "report")
    assert "&middot; probability " in new.read_text()
    shutil.rmtree(store / "data" / "probabilities")
    shutil.rmtree(store / "done" / "probabilities", ignore_errors=True)
    (job / "attribution" / "classes.json").unlink()
    build_report(JobResults(job), tmp_path / "old")
    page = (tmp_path / "old" / "attribution.html").read_text()
    assert "probability" not in page.split("<h1>")[1].split("</p>", 1)[1]
    for i in (0, 1, 2, 4, 5, 6):  # 3 and 7 are unreadable
        section = page[page.index(f'id="image-{i}"'):]
        assert f"Target: <strong>class {int(targets[i])}</strong>" in section
