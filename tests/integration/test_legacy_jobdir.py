"""A job directory written before the package layout changed resumes after it.

``tests/fixtures/legacy_v010`` was written by ray_dissect 0.1.0 in the flat layout (commit
6bee48b) and cut back to an interrupted state (see its README): resuming it with this code
must keep every stage hash, reuse what is done and give the records of the old finished run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ray_dissect.pipeline.stages import stage_hashes
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import JobSpec

FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy_v010"
DATASET = Path("/tmp/ray-dissect-legacy-v1/dataset")  # where the stored spec says it is

pytestmark = pytest.mark.ray


@pytest.fixture
def legacy_job(tmp_path: Path) -> Path:
    """A copy of the interrupted job directory, its dataset where its spec expects it."""
    shutil.rmtree(DATASET, ignore_errors=True)
    shutil.copytree(FIXTURE / "dataset", DATASET)
    job = tmp_path / "job"
    shutil.copytree(FIXTURE / "job", job)
    return job


def _summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    del data["stage_seconds"]
    return data


def test_stage_hashes_are_those_the_old_layout_wrote(legacy_job: Path) -> None:
    """The spec hash and every stage hash of the stored spec are unchanged by the move."""
    spec = JobSpec.model_validate_json((legacy_job / "spec.json").read_text())
    manifest = json.loads((legacy_job / "manifest.json").read_text())
    assert spec.spec_hash() == manifest["spec_hash"]
    assert stage_hashes(spec) == {k: v["hash"] for k, v in manifest["stages"].items()}


def test_legacy_job_directory_resumes_to_the_old_records(ray_cluster: None,
                                                         legacy_job: Path) -> None:
    """Resuming redoes only the removed work units and gives the old run's records."""
    spec = JobSpec.model_validate_json((legacy_job / "spec.json").read_text())
    run_job(spec, legacy_job)
    expected = FIXTURE / "expected"
    for name in ("_blocks.2.jsonl", "_blocks.10.jsonl"):
        assert (legacy_job / "records" / name).read_bytes() == (expected / name).read_bytes()
    assert (legacy_job / "errors.jsonl").read_bytes() == (expected / "errors.jsonl").read_bytes()
    assert _summary(legacy_job / "summary.json") == _summary(expected / "summary.json")
    stages = json.loads((legacy_job / "manifest.json").read_text())["stages"]
    computed = {name: state["computed"] for name, state in stages.items()}
    assert computed == {"concepts": 1, "activations": 0, "thresholds": 1, "scoring": 1,
                        "masking": 0}
