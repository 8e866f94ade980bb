"""The threshold sweep's per-unit curves (each unit's 5 concepts of highest IoU at any
quantile, with their IoU at every quantile) checked against separate NetDissect runs at each
quantile, and the category shares of the best formulas' positive atoms tallied by hand."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.stages.threshold_sweep import curve_concepts
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
HIGH = [0.01, 0.05, 0.2]


def _spec(data: Path, **extra: Any) -> Any:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:shifted_color_detectors",
                  "preprocess": {"size": 32, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}, **extra})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """The rows of a compositional sweep at the high quantiles, and the base dir with
    a NetDissect run per high quantile (``nd<q>``)."""
    base = tmp_path_factory.mktemp("curves")
    data = generate_dataset(base / "ds", 40, seed=4, image_size=32, mask_size=16)
    run_stages(_spec(data, method={"kind": "compositional", "length": 2, "beam": 3},
                     studies={"threshold_sweep": {"quantiles": HIGH}}), base / "out")
    for q in HIGH:
        run_stages(_spec(data, method={"quantile": q, "top_k": 8}), base / f"nd{q}")
    rows = [json.loads(x) for x in (base / "out" / "studies" / "threshold_sweep.jsonl")
            .read_text().splitlines()]
    return rows, base


def test_curves_hold_each_units_best_concepts_and_their_iou_at_every_quantile(runs) -> None:
    """From the NetDissect runs' top-8 lists: a concept among the 5 of highest peak IoU is in
    the top 8 at its peak quantile, so the 5 best peaks seen there are the curve's concepts,
    and a curve IoU at q equals the run's IoU at q wherever the run lists the concept."""
    rows, base = runs
    runs_at = {q: {r.unit: {t.number: t.iou for t in r.top}
                   for r in read_unit_records(base / f"nd{q}" / "records" / "pool.jsonl")}
               for q in HIGH}
    for unit in range(3):
        curve = {q: next(r for r in rows if r["unit"] == unit and r["quantile"] == q)["curve"]
                 for q in HIGH}
        peaks: dict[int, float] = {}
        for q in HIGH:
            for c, iou in runs_at[q][unit].items():
                peaks[c] = max(peaks.get(c, 0.0), iou)
            for point in curve[q]:
                if point["number"] in runs_at[q][unit]:
                    assert point["iou"] == pytest.approx(runs_at[q][unit][point["number"]],
                                                         abs=1e-12)
        best = sorted(peaks, key=lambda c: (-peaks[c], c))[:5]
        assert [p["number"] for p in curve[HIGH[0]]] == best
        assert all([p["number"] for p in curve[q]] == best for q in HIGH)


def test_curve_concepts_on_a_hand_example() -> None:
    """Peaks over quantiles, unknown labels left out, fewer positive IoUs padded with -1."""
    ious = np.array([[[0.0, 0.5, 0.1, 0.0], [0.0, 0.0, 0.0, 0.2]],
                     [[0.9, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.1]]])
    known = np.array([False, True, True, True])
    chosen, values = curve_concepts(ious, known, n=3)
    np.testing.assert_array_equal(chosen, [[1, 2, -1], [3, -1, -1]])
    np.testing.assert_allclose(values, [[[0.5, 0.1, 0.0], [0.2, 0.0, 0.0]],
                                        [[0.2, 0.3, 0.0], [0.1, 0.0, 0.0]]])


def _positive_names(formula: str) -> list[str]:
    """The names of a printed formula that no NOT precedes (hand parser: the beam search's
    formulas negate single concepts only)."""
    tokens = re.findall(r"\(|\)|NOT|AND|OR|[^\s()]+", formula)
    return [t for i, t in enumerate(tokens) if t not in ("(", ")", "NOT", "AND", "OR")
            and (i == 0 or tokens[i - 1] != "NOT")]


def test_formula_shares_tally_the_positive_atoms_of_the_best_formulas(runs) -> None:
    rows, _ = runs
    for q in HIGH:
        units = [r for r in rows if r["quantile"] == q and r["unit"] is not None]
        assert all(r["formula"] for r in units)
        for r in units:
            assert [a["name"] for a in r["formula_atoms"]] == _positive_names(r["formula"])
        cats = Counter(a["category"] for r in units for a in r["formula_atoms"])
        (layer,) = [r for r in rows if r["quantile"] == q and r["unit"] is None]
        total = sum(cats.values())
        assert layer["formula_category_shares"] == pytest.approx(
            {c: n / total for c, n in cats.items()})


def test_the_studies_page_draws_a_curve_per_unit_and_the_atom_shares(runs, tmp_path) -> None:
    """Each unit's plot has a line per curve concept whose data rows are the rows' IoUs."""
    from ray_dissect import build_report
    from ray_dissect.results.job import JobResults

    rows, base = runs
    build_report(JobResults(base / "out"), tmp_path)
    page = (tmp_path / "studies.html").read_text()
    assert "Category shares of the formula atoms against the quantile" in page
    for unit in range(3):
        assert f"Unit {unit}: IoU against the quantile" in page
        first = next(r for r in rows if r["unit"] == unit)
        for point in first["curve"]:
            assert f"<title>{point['name']}</title></polyline>" in page
    unit0 = [r for r in rows if r["unit"] == 0]
    cells = "".join(f"<td>{p['iou']:.4f}</td>" for p in unit0[0]["curve"])
    assert f"<td>{unit0[0]['quantile']:g}</td><td>high</td>{cells}" in page
