"""The heuristics study (CCE's compare_heuristics): per unit, range and heuristic one beam
search; the unpruned search is the scoring's own, admissible bounds find the same best
formula with no more states, and the layer rows are the means of the range rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import parse_spec

PLANTED = Path(__file__).parents[2] / "fixtures" / "planted.py"
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "body.out"
HEURISTICS = ["none", "areas", "cfh", "mmesh"]


def _spec(data: Path, **extra: Any) -> Any:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:named_colors_with_head",
                  "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 2, "length": 2, "beam": 3},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}, **extra})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    base = tmp_path_factory.mktemp("heuristics")
    data = generate_dataset(base / "ds", 24, seed=3, image_size=32, mask_size=16)
    run_stages(_spec(data, units=[0, 3, 8], studies={"heuristics": {}}), base / "out")
    rows = [json.loads(x) for x in (base / "out" / "studies" / "heuristics.jsonl")
            .read_text().splitlines()]
    return base / "out", rows


def test_unpruned_searches_are_the_records_explanations(job) -> None:
    out, rows = job
    records = {r.unit: r for r in read_unit_records(out / "records" / f"{LAYER}.jsonl")}
    plain = [r for r in rows if r["unit"] is not None and r["heuristic"] == "none"]
    assert sorted({r["unit"] for r in plain}) == [0, 3, 8]
    assert len(plain) == sum(len(rec.explanations) for rec in records.values())
    for row in plain:
        exp = records[row["unit"]].explanations[row["range_index"]]
        assert (row["formula"], row["visited"]) == (exp.text, exp.visited)
        assert row["iou"] == pytest.approx(exp.iou, abs=1e-12)


def test_admissible_bounds_keep_the_best_formula_with_fewer_states(job) -> None:
    _, rows = job
    by_key = {(r["unit"], r["range_index"], r["heuristic"]): r for r in rows if r["unit"]
              is not None}
    for (unit, k, heuristic), row in by_key.items():
        plain = by_key[(unit, k, "none")]
        assert row["formula"] == plain["formula"], (unit, k, heuristic)
        assert row["visited"] <= plain["visited"]
        assert row["seconds"] > 0
    assert any(by_key[(u, k, "mmesh")]["visited"] < r["visited"]
               for (u, k, h), r in by_key.items() if h == "none")


def test_layer_rows_are_the_means_of_the_range_rows(job) -> None:
    _, rows = job
    layer = {r["heuristic"]: r for r in rows if r["unit"] is None}
    assert list(layer) == HEURISTICS
    for heuristic, row in layer.items():
        mine = [r for r in rows if r["unit"] is not None and r["heuristic"] == heuristic]
        assert row["ranges"] == len(mine) and row["same_best"] == len(mine)
        assert row["visited"] == pytest.approx(sum(r["visited"] for r in mine) / len(mine))
        assert row["total_seconds"] == pytest.approx(sum(r["seconds"] for r in mine))
        assert row["seconds"] == pytest.approx(row["total_seconds"] / len(mine))


def test_the_study_needs_a_compositional_method(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "ds", 4, seed=1, image_size=32, mask_size=16)
    with pytest.raises(SpecError, match=r"studies\.heuristics': needs a compositional"):
        run_stages(_spec(data, method={"kind": "netdissect"}, studies={"heuristics": {}}),
                   tmp_path / "out")


def test_the_studies_page_tabulates_the_layer_rows(job, tmp_path: Path) -> None:
    from ray_dissect import build_report
    from ray_dissect.results.job import JobResults

    out, rows = job
    build_report(JobResults(out), tmp_path)
    page = (tmp_path / "studies.html").read_text()
    assert 'data-study="heuristics"' in page
    for r in (r for r in rows if r["unit"] is None):
        assert (f"<td>{r['heuristic']}</td><td>{r['ranges']}</td><td>{r['visited']:.1f}</td>"
                in page)
