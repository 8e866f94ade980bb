"""ray_dissect.open_job: summary, validated records, DataFrames, activations, partial jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ray_dissect
from ray_dissect.errors import SpecError
from ray_dissect.results import to_pandas
from ray_dissect.results.job import ROW_COLUMNS, JobResults, open_job

LAYER = "body.out"


def _lines(job: Path) -> list[dict]:
    text = (job / "records" / f"{LAYER}.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_open_job_reads_what_the_job_wrote(clustered_job: Path) -> None:
    """The summary, records and activations are the job directory's."""
    job = ray_dissect.open_job(clustered_job)
    assert isinstance(job, ray_dissect.JobResults) and "open_job" in ray_dissect.__all__
    assert job.summary is not None and job.summary.layers[0].units == 12
    raw = _lines(clustered_job)
    assert [r.unit for r in job.records(LAYER)] == [r["unit"] for r in raw]
    assert job.records(LAYER)[3].model_dump(mode="json") == raw[3]
    acts = job.activations(LAYER)
    assert acts.shape == (48, 12, 32, 32) and acts.dtype == np.float32
    assert job.feature_shape(LAYER) == (12, 32, 32)
    assert job.missing_layers() == [] and job.errors() == []


def test_to_pandas_has_one_row_per_unit_and_range(clustered_job: Path) -> None:
    """Rows are (unit, range) pairs with the record's numbers (the method and the function
    give the same frame)."""
    df = to_pandas(open_job(clustered_job), LAYER)
    assert df.equals(open_job(clustered_job).to_pandas(LAYER))
    raw = _lines(clustered_job)
    assert list(df.columns) == list(ROW_COLUMNS)
    assert len(df) == sum(max(1, len(r["explanations"])) for r in raw)
    row = df[(df.unit == 8) & (df.range_index == 2)].iloc[0]
    e = raw[8]["explanations"][2]
    assert row.formula == e["text"] and row.formula_iou == pytest.approx(e["iou"])
    assert row.activation_coverage == pytest.approx(e["metrics"]["activation_coverage"])
    assert row.label_iou == pytest.approx(raw[8]["label"]["iou"])


def test_best_iou_is_the_label_for_netdissect_and_the_best_formula_otherwise(
        clustered_job: Path, empty_job: Path) -> None:
    """best_iou: the best range formula's IoU per unit (clustered), the label IoU
    (netdissect); interpretable is best_iou >= the job's threshold; dtypes as documented."""
    df = open_job(clustered_job).to_pandas(LAYER)
    raw = _lines(clustered_job)
    threshold = json.loads((clustered_job / "spec.json").read_text())["method"]["iou_threshold"]
    for r in raw:
        want = max(e["iou"] for e in r["explanations"] if e["text"] is not None)
        rows = df[df.unit == r["unit"]]
        assert rows.best_iou.tolist() == pytest.approx([want] * len(rows))
        assert rows.interpretable.tolist() == [want >= threshold] * len(rows)
    assert df.best_iou.max() > df.label_iou.max()  # a formula beats every label here
    assert df.dtypes.best_iou == np.float64 and str(df.dtypes.range_index) == "Int64"
    plain = open_job(empty_job).to_pandas("pool")
    labels = {r["unit"]: r["label"] for r in
              map(json.loads, (empty_job / "records" / "pool.jsonl").read_text().splitlines())}
    for row in plain.itertuples():
        want = labels[row.unit]["iou"] if labels[row.unit] else 0.0
        assert row.best_iou == pytest.approx(want) and not row.interpretable
        assert np.isnan(row.formula_iou) and row.formula is None
    top = plain.sort_values("best_iou", ascending=False).unit.tolist()
    assert top[0] == max(labels, key=lambda u: labels[u]["iou"] if labels[u] else 0.0)


def test_netdissect_rows_and_best_explanations(empty_job: Path, clustered_job: Path) -> None:
    """A unit without explanations is one row; best_explanations ranks by IoU."""
    rows = open_job(empty_job).rows("pool")
    assert len(rows) == 3 and all(r["range_index"] is None for r in rows)
    best = open_job(clustered_job).best_explanations(LAYER, 3)
    ious = sorted((e["iou"] for r in _lines(clustered_job) for e in r["explanations"]),
                  reverse=True)
    assert [e.iou for _, e in best] == pytest.approx(ious[:3])


def test_partial_and_foreign_directories(clustered_job: Path, tmp_path: Path) -> None:
    """A job without records yet lists the layer as missing; a directory without spec.json
    and an unknown layer are refused."""
    job = tmp_path / "job"
    shutil.copytree(clustered_job, job, ignore=shutil.ignore_patterns("report", "*.zarr"))
    (job / "records" / f"{LAYER}.jsonl").unlink()
    (job / "summary.json").unlink()
    partial = JobResults(job)
    assert partial.summary is None and partial.missing_layers() == [LAYER]
    assert partial.records(LAYER) == [] and partial.layer_summary(LAYER).units == 0
    assert partial.feature_shape(LAYER) is None
    with pytest.raises(SpecError, match="unknown layer"):
        partial.records("nope")
    with pytest.raises(SpecError, match="not a job directory"):
        open_job(tmp_path / "nothing")
