"""Generated jobs the report tests share (run in-process once per session, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.report_job import dataset, run_job, with_top_images

from ray_dissect.pipeline.table import build_report
from ray_dissect.report.build import ReportResult
from ray_dissect.results import JobResults


@pytest.fixture(scope="session")
def report_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 generated 64-px images with 32-px masks."""
    return dataset(tmp_path_factory.mktemp("report") / "ds", 48)


@pytest.fixture(scope="session")
def clustered_job(tmp_path_factory: pytest.TempPathFactory, report_data: Path) -> Path:
    """Twelve colour-name units (layer body.out), 3 k-means ranges each, a 3-class head."""
    out = tmp_path_factory.mktemp("report") / "clustered"
    return run_job(report_data, out, "named_colors_with_head", ["body.out"], kind="clustered",
                   clusters=3, length=2, beam=3, classifier="fc")


@pytest.fixture(scope="session")
def empty_job(tmp_path_factory: pytest.TempPathFactory, report_data: Path) -> Path:
    """Three colour detectors scored at IoU threshold 1: no unit is interpretable."""
    out = tmp_path_factory.mktemp("report") / "empty"
    return run_job(report_data, out, "color_detectors", ["pool"], kind="netdissect",
                   iou_threshold=1.0)


@pytest.fixture(scope="session")
def clustered(clustered_job: Path) -> JobResults:
    """The clustered job's results with top images attached."""
    return with_top_images(clustered_job)


@pytest.fixture(scope="session")
def clustered_site(tmp_path_factory: pytest.TempPathFactory, clustered: JobResults
                   ) -> ReportResult:
    """The clustered job's report, built once (read-only for the tests)."""
    return build_report(clustered, tmp_path_factory.mktemp("site") / "report")


@pytest.fixture(scope="session")
def visual_site(tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    """The report of a method-none job that ran attribution, receptive fields and PRISM."""
    from fixtures.visual_job import visual_job

    job = visual_job(tmp_path_factory.mktemp("visual"))
    return build_report(JobResults(job), job / "report")


@pytest.fixture(scope="session")
def studies_dir(tmp_path_factory: pytest.TempPathFactory, report_data: Path) -> Path:
    """A clustered job that ran the four studies, with compare.json against a baseline."""
    from fixtures.study_job import studies_job

    return studies_job(report_data, tmp_path_factory.mktemp("studies"))


@pytest.fixture(scope="session")
def studies_site(tmp_path_factory: pytest.TempPathFactory, studies_dir: Path) -> ReportResult:
    """The studies job's report, built once (read-only for the tests)."""
    return build_report(JobResults(studies_dir), tmp_path_factory.mktemp("site") / "report")
