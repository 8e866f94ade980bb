"""A whole job gives the same records with the compiled kernels and with the numpy reference,
and records which kernels computed its masks."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.report_job import PLANTED, RAW, dataset, run_job

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


def test_a_job_on_a_device_gives_the_cpu_jobs_records(tmp_path) -> None:
    """The whole device route in-process: ``execute_on("cpu:0")`` is a torch device that is
    not the string "cpu", so the thresholds sort and the scoring masks take their device code
    (as on a GPU actor) while running on the CPU: thresholds files and records are the CPU
    job's, byte for byte, and the breakdown names the device masks."""
    import numpy as np

    from ray_dissect.pipeline.run import execute_locally, execute_on, run_stages
    from ray_dissect.spec import parse_spec

    data = dataset(tmp_path / "ds", 24)
    jobs = {}
    for name, executor in (("cpu", execute_locally), ("device", execute_on("cpu:0"))):
        spec = parse_spec({
            "name": "same", "model": {"factory": f"{PLANTED}:named_colors_with_head",
                                      "preprocess": {"size": 64, **RAW}},
            "layers": ["body.out"], "dataset": {"root": str(data)},
            "method": {"kind": "clustered", "clusters": 3, "length": 2, "beam": 3},
            "resources": {"batch_size": 16, "shard_images": 16, "units_per_task": 4}})
        jobs[name] = tmp_path / name
        run_stages(spec, jobs[name], executor)
    manifest = read_manifest(jobs["device"])
    assert manifest is not None and "masks_device" in (manifest.stages["scoring"].breakdown or {})
    for key in ("thresholds", "nonfinite", "ranges"):
        cpu = np.load(jobs["cpu"] / "thresholds" / "body.out.npz")[key]
        dev = np.load(jobs["device"] / "thresholds" / "body.out.npz")[key]
        assert cpu.tobytes() == dev.tobytes(), key
    assert _records(jobs["cpu"]) == _records(jobs["device"]) != {}
