"""Jobs whose dataset and job directory live on an object store (s3:// on a local moto S3).

Every Ray process reads the dataset and writes Zarr shards, record parts and done markers
through s3fs; the records must equal a run on local disk, and a driver killed mid-search must
resume from the markers on the object store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures.procs import kill_group, start_cli, wait_for
from fixtures.s3 import LocalS3

from ray_dissect.pipeline.status import render_status
from ray_dissect.records.io import read_unit_records
from ray_dissect.records.schema import JobSummary
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays, location, read_text

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _spec_dict(root: str) -> dict:
    return {
        "model": {"factory": f"{PLANTED}:slow_mixed_units",
                  "preprocess": {"size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        "layers": ["inner.pool"], "dataset": {"root": root},
        "method": {"kind": "compositional", "length": 2, "quantile": 0.05,
                   "heuristic": "mmesh", "concept_masking": True, "masking_images": 4},
        "resources": {"actors": 2, "batch_size": 8, "shard_images": 16, "units_per_task": 1}}


def _manifest(out: str) -> dict | None:
    path = location(out) / "manifest.json"
    return json.loads(read_text(path)) if path.exists() else None


def _records(out: str, layer: str = "inner.pool") -> list[dict]:
    """Records without their provenance (its spec hash covers the dataset's location)."""
    recs = read_unit_records(location(out) / "records" / f"{layer}.jsonl")
    return [r.model_dump(mode="json", exclude={"provenance"}) for r in recs]


def _summary(out: str) -> dict:
    summary = json.loads(read_text(location(out) / "summary.json"))
    return {k: v for k, v in summary.items() if k not in ("provenance", "stage_seconds")}


@pytest.fixture(scope="module")
def s3_data(generated: Path, local_s3: LocalS3) -> str:
    return local_s3.upload(generated, local_s3.bucket("datasets") + "/generated")


@pytest.fixture(scope="module")
def local_reference(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("local") / "out"
    run_job(parse_spec(_spec_dict(str(generated))), out)
    return str(out)


@pytest.fixture(scope="module")
def s3_reference(s3_data: str, local_s3: LocalS3) -> str:
    out = local_s3.bucket("runs") + "/whole"
    run_job(parse_spec(_spec_dict(s3_data)), out)
    return out


def test_dataset_and_job_on_s3_equal_a_local_run(s3_data: str, s3_reference: str,
                                                 local_reference: str) -> None:
    out = s3_reference
    assert _records(out) == _records(local_reference)
    assert any(e["metrics"]["concept_masking"] is not None
               for r in _records(out) for e in r["explanations"])
    assert _summary(out) == _summary(local_reference)
    for name in ("activations.zarr", "concepts.zarr"):
        key = "inner.pool" if name == "activations.zarr" else "set_ids"
        got = arrays.open_array(location(out) / name, key)[:]
        assert np.array_equal(got, arrays.open_array(Path(local_reference) / name, key)[:])
    assert not Path("s3:").exists()  # the URI was not taken for a relative local path
    text = render_status(location(out))
    assert f"job {out}" in text and re.search(r"^scoring +done ", text, re.M)

    again = run_job(parse_spec(_spec_dict(s3_data)), out)  # all work found done on S3
    stages = _manifest(out)["stages"]
    assert all(stages[s]["computed"] == 0 for s in stages), stages
    assert again.layers == JobSummary.model_validate_json(
        read_text(location(out) / "summary.json")).layers


def test_kill_driver_mid_search_then_resume_on_s3(s3_data: str, s3_reference: str,
                                                  local_s3: LocalS3, tmp_path: Path) -> None:
    """Records after kill + resume equal the uninterrupted run's, byte for byte."""
    import ray

    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(_spec_dict(s3_data)))
    out = local_s3.bucket("runs") + "/killed"
    address = ray.get_runtime_context().gcs_address

    def searching() -> bool:
        m = _manifest(out)
        return bool(m) and m["stages"]["scoring"]["state"] == "running" and \
            m["stages"]["scoring"]["done"] >= 2

    proc = start_cli("run", str(job), "--out", out, "--address", address)
    try:
        wait_for(searching, 240, proc, "the search")
    finally:
        kill_group(proc)
    resumed = start_cli("resume", out, "--address", address)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read().decode()[-2000:]
    after = _manifest(out)
    assert after["runs"][-1]["status"] == "finished" and len(after["runs"]) == 2
    for earlier in ("concepts", "activations", "thresholds"):
        assert after["stages"][earlier]["computed"] == 0, earlier
    assert after["stages"]["scoring"]["computed"] <= after["stages"]["scoring"]["total"] - 2
    for name in ("records/inner.pool.jsonl", "errors.jsonl"):
        assert read_text(location(out) / name) == read_text(location(s3_reference) / name)
