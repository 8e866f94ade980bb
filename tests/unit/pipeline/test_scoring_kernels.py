"""A whole job gives the same records with the compiled kernels and with the numpy reference,
and records which kernels computed its masks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.report_job import dataset, run_job

from ray_dissect.concepts.kernels import HAVE_NUMBA, KERNEL_ENV
from ray_dissect.job.manifest import read_manifest


def _records(job: Path) -> dict[str, str]:
    parts = sorted((job / "parts").rglob("*.jsonl"))
    return {str(p.relative_to(job)): p.read_text() for p in parts}


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed")
def test_clustered_job_records_are_identical_with_numba_and_numpy(tmp_path, monkeypatch) -> None:
    """Quantile and k-means ranges of a planted model, every record byte for byte (same job
    name, so the same provenance); the scoring stage's breakdown names the kernels."""
    data = dataset(tmp_path / "ds", 24)
    jobs = {}
    for which in ("numba", "numpy"):
        monkeypatch.setenv(KERNEL_ENV, which)
        jobs[which] = run_job(data, tmp_path / which / "job", "named_colors_with_head",
                              ["body.out"], kind="clustered", clusters=3, length=2, beam=3)
        manifest = read_manifest(jobs[which])
        assert manifest is not None
        breakdown = manifest.stages["scoring"].breakdown or {}
        assert set(breakdown) == {f"masks_{which}", "search"}
    numba, numpy = _records(jobs["numba"]), _records(jobs["numpy"])
    assert numba and numba == numpy
