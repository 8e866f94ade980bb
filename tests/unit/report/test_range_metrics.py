"""CCE's compute_metrics summary: per layer and range the means of the explanations' metrics,
checked against a pandas group-by of the per-unit rows, and its table on the layer page."""

from __future__ import annotations

import math

import pytest

from ray_dissect.report.build import ReportResult
from ray_dissect.results.job import JobResults
from ray_dissect.results.metrics import METRIC_NAMES, RANGE_METRIC_COLUMNS


def test_range_means_equal_a_group_by_of_the_unit_rows(clustered: JobResults) -> None:
    frame = clustered.to_pandas("body.out")
    groups = frame.groupby("range_index")
    got = clustered.range_metrics_frame()
    assert list(got.columns) == list(RANGE_METRIC_COLUMNS)
    assert list(got["range_index"]) == sorted(frame["range_index"].unique())
    for _, row in got.iterrows():
        part = groups.get_group(row["range_index"])
        assert row["ranges"] == len(part)
        assert row["explained"] == int(part["formula"].notna().sum())
        assert row["iou"] == pytest.approx(part["formula_iou"].mean())
        assert row["visited"] == pytest.approx(part["visited"].mean())
        for name in METRIC_NAMES:
            values = part[name].dropna()
            if values.empty:
                assert row[name] is None or math.isnan(row[name])
            else:
                assert row[name] == pytest.approx(values.mean())


def test_the_layer_page_shows_the_table(clustered: JobResults,
                                        clustered_site: ReportResult) -> None:
    page = (clustered_site.out / "layers" / "body.out.html").read_text()
    assert "Mean metrics per range" in page
    for row in clustered.range_metrics("body.out"):
        assert (f"<tr><td>{row['range_index']}</td><td>{row['ranges']}</td>"
                f"<td>{row['explained']}</td><td>{row['iou']:.4f}</td>") in page
