"""``method.search: optimal`` in the scoring stage: certificates in the records, the beam's
start kept, and ``compare-search`` over the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ray_dissect.cli import app
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import SpecError
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.report.build import build_report
from ray_dissect.results.job import open_job
from ray_dissect.spec import parse_spec
from ray_dissect.studies.search_compare import compare_search

PLANTED = Path(__file__).parents[2] / "fixtures" / "planted.py"
LAYER = "body.out"


def _spec(data: Path, search: str) -> object:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:named_colors_with_head",
                  "preprocess": {"size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": [LAYER], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 3, "length": 3, "beam": 2,
                   "search": search},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 6}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a job with search: beam, the same job with search: optimal)."""
    base = tmp_path_factory.mktemp("optimal")
    data = generate_dataset(base / "ds", 48, seed=6, image_size=32, mask_size=16)
    run_stages(_spec(data, "beam"), base / "beam")
    run_stages(_spec(data, "optimal"), base / "optimal")
    return base / "beam", base / "optimal"


def _explanations(root: Path) -> list:
    return [(r.unit, e) for r in read_unit_records(JobDir(root).records(LAYER))
            for e in r.explanations]


def test_every_explanation_has_a_certificate(runs) -> None:
    """Beam: a root bound at least its IoU, no timing. Optimal: proved, bound == IoU, the
    beam's answer kept as its start, never worse than it."""
    beam, optimal = (_explanations(r) for r in runs)
    assert len(beam) == len(optimal) > 0
    for (ub, b), (uo, o) in zip(beam, optimal, strict=True):
        assert ub == uo and b.certificate.search == "beam" and b.certificate.seconds is None
        assert b.certificate.upper_bound >= b.iou and b.certificate.beam is None
        cert = o.certificate
        assert cert.search == "optimal" and cert.optimal and cert.seconds is not None
        assert cert.upper_bound == pytest.approx(o.iou)
        assert cert.beam.iou == b.iou and cert.beam.text == b.text
        assert o.iou >= b.iou and o.iou <= b.certificate.upper_bound + 1e-12


def test_compare_search_counts_the_beams_misses(runs) -> None:
    """The report's counts are the records' (beam IoU strictly below the optimum)."""
    beam, optimal = runs
    report = compare_search(str(optimal))
    (layer,) = report.layers
    found = _explanations(optimal)
    assert layer.explanations == len(found) and layer.proved == len(found)
    assert layer.suboptimal == sum(e.iou > e.certificate.beam.iou for _, e in found)
    out = CliRunner().invoke(app, ["compare-search", str(optimal)])
    assert out.exit_code == 0 and f"{layer.suboptimal}/{layer.explanations}" in out.output
    assert (optimal / "studies" / "compare_search.json").is_file()
    with pytest.raises(SpecError):
        compare_search(str(beam))


def test_report_shows_the_certificate(runs, tmp_path: Path) -> None:
    """The unit page says "optimal" for a proved formula; the layer data carry the gap."""
    _, optimal = runs
    site = build_report(open_job(optimal), tmp_path / "site")
    pages = list((tmp_path / "site" / "units").rglob("*.html"))
    assert site and pages and all("optimal</span>" in p.read_text() for p in pages)
    data = "".join(p.read_text() for p in (tmp_path / "site" / "data").glob("*.js"))
    assert '"g":0.0' in data
