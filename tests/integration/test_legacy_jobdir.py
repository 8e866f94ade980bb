"""A job directory written before the package layout changed resumes after it.

``tests/fixtures/legacy_v010`` was written by ray_dissect 0.1.0 in the flat layout (commit
6bee48b) and cut back to an interrupted state (see its README): resuming it with this code
must keep every stage hash, reuse what is done and give the records of the old finished run
(plus what later record schemas added: top images).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ray_dissect.pipeline.table import stage_hashes
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


ADDED_SINCE = {"schema_version", "top_images", "samples",  # record fields of schema v3
               "receptive_field", "certificate"}  # certificate: schema v4


def _old_fields(value: object) -> object:
    """A record (parsed JSON) without the fields later schema versions added."""
    if isinstance(value, dict):
        return {k: _old_fields(v) for k, v in value.items() if k not in ADDED_SINCE}
    if isinstance(value, list):
        return [_old_fields(v) for v in value]
    return value


def _records(path: Path) -> list:
    return [_old_fields(json.loads(line)) for line in path.read_text().splitlines()]


def _summary(path: Path) -> dict:
    data = json.loads(path.read_text())
    del data["stage_seconds"], data["schema_version"]
    return data


def test_stage_hashes_are_those_the_old_layout_wrote(legacy_job: Path) -> None:
    """The spec hash and every stage hash of the stored spec are unchanged by the move."""
    spec = JobSpec.model_validate_json((legacy_job / "spec.json").read_text())
    manifest = json.loads((legacy_job / "manifest.json").read_text())
    assert spec.spec_hash() == manifest["spec_hash"]
    new = stage_hashes(spec)
    assert {k: new[k] for k in manifest["stages"]} == {
        k: v["hash"] for k, v in manifest["stages"].items()}


def test_legacy_job_directory_resumes_to_the_old_records(ray_cluster: None,
                                                         legacy_job: Path) -> None:
    """Resuming redoes only the removed work units and gives the old run's records."""
    spec = JobSpec.model_validate_json((legacy_job / "spec.json").read_text())
    run_job(spec, legacy_job)
    expected = FIXTURE / "expected"
    for name in ("_blocks.2.jsonl", "_blocks.10.jsonl"):
        assert _records(legacy_job / "records" / name) == _records(expected / name)
    assert _records(legacy_job / "errors.jsonl") == _records(expected / "errors.jsonl")
    assert _summary(legacy_job / "summary.json") == _summary(expected / "summary.json")
    stages = json.loads((legacy_job / "manifest.json").read_text())["stages"]
    computed = {name: state["computed"] for name, state in stages.items()}
    assert computed == {"concepts": 1, "activations": 0, "thresholds": 1, "scoring": 1,
                        "masking": 0, "top_images": 4,  # stages the old layout did not have
                        "attribution": 0, "threshold_sweep": 0, "ranges_importance": 0,
                        "unit_ablation": 0, "concept_blackout_iou": 0, "concept_blackout": 0,
                        "prism_pca": 0, "prism": 0, "receptive_fields": 0,
                        "unit_attribution": 0, "heuristics": 0}
