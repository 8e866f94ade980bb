"""``units:``: a job on a subset of units writes, for those units, exactly the records, study
rows and stores of the job on every unit; ``{random: N, seed: S}`` is a seeded draw."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

PLANTED = Path(__file__).parents[2] / "fixtures" / "planted.py"
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "body.out"
SUBSET = [1, 4, 5, 10]


def _spec(data: Path, **extra: Any) -> Any:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:named_colors_with_head",
                  "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 2, "length": 2, "beam": 3},
        "studies": {"threshold_sweep": {"quantiles": [0.05, 0.2]},
                    "ranges_importance": {"per_unit": True},
                    "unit_ablation": {"single_units": True}},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 3}, **extra})


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("units")
    data = generate_dataset(base / "ds", 32, seed=5, image_size=32, mask_size=16)
    run_stages(_spec(data), base / "all")
    run_stages(_spec(data, units=SUBSET), base / "some")
    return base / "all", base / "some"


def _records(job: Path) -> dict[int, dict[str, Any]]:
    return {r.unit: r.model_dump(exclude={"provenance"})
            for r in read_unit_records(job / "records" / f"{LAYER}.jsonl")}


def _rows(job: Path, study: str) -> list[dict[str, Any]]:
    lines = (job / "studies" / f"{study}.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def test_records_are_the_full_jobs_records_of_those_units(jobs) -> None:
    whole, some = (_records(j) for j in jobs)
    assert sorted(some) == SUBSET
    for unit in SUBSET:
        assert some[unit] == whole[unit], unit


def test_the_store_holds_the_chosen_units_only(jobs) -> None:
    whole, some = (arrays.open_array(j / "activations.zarr", LAYER)[:] for j in jobs)
    assert some.shape[1] == len(SUBSET)
    np.testing.assert_array_equal(some, whole[:, SUBSET])


@pytest.mark.parametrize(("study", "key"), [("threshold_sweep", "unit"),
                                            ("ranges_importance", "unit")])
def test_per_unit_study_rows_are_the_full_jobs_rows(jobs, study: str, key: str) -> None:
    whole, some = (_rows(j, study) for j in jobs)
    per_unit = [r for r in some if r.get(key) is not None]
    assert sorted({r[key] for r in per_unit}) == SUBSET
    assert per_unit == [r for r in whole if r.get(key) in SUBSET]


def test_single_unit_ablations_zero_the_unit_in_the_model(jobs) -> None:
    """A unit's ablation zeroes its own channel of the model: the same flips as in the full
    job (the label groups differ, as they hold only the chosen units)."""
    whole, some = (_rows(j, "unit_ablation") for j in jobs)
    singles = [r for r in some if r["kind"] == "unit"]
    assert [r["units"] for r in singles] == [[u] for u in SUBSET]
    assert singles == [r for r in whole if r["kind"] == "unit" and r["units"][0] in SUBSET]


def test_out_of_range_units_are_refused_before_any_work(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "ds", 4, seed=1, image_size=32, mask_size=16)
    with pytest.raises(SpecError, match=r"field 'units': unit 12 of layer 'body.out'.*12 units"):
        run_stages(_spec(data, units=[0, 12]), tmp_path / "out")
    assert not (tmp_path / "out" / "activations.zarr").exists()
    with pytest.raises(SpecError, match=r"'units.random': 13 units"):
        run_stages(_spec(data, units={"random": 13}), tmp_path / "out")


@pytest.fixture(scope="module")
def model_jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Jobs whose stages run the model per unit: concept masking, receptive fields and the
    concept blackout (each reads the unit's own channel of the model's output)."""
    base = tmp_path_factory.mktemp("units_model")
    data = generate_dataset(base / "ds", 16, seed=7, image_size=32, mask_size=16)
    extra = {"method": {"kind": "clustered", "clusters": 2, "length": 1, "beam": 2,
                        "concept_masking": True, "masking_images": 3},
             "analyses": {"receptive_fields": {"layers": [LAYER], "top_k": 2, "occluder": 8,
                                               "stride": 8, "fill": 0.5}},
             "studies": {"concept_blackout": {"limit": 4}}, "top_images": {"k": 3}}
    run_stages(_spec(data, **extra), base / "all")
    run_stages(_spec(data, **extra, units=[2, 7]), base / "some")
    return base / "all", base / "some"


def _masking(record: dict[str, Any]) -> list[float | None]:
    """The record's concept-masking scores, taken out of it (numpy's float32 sums in the
    cosine round by the buffers' alignment: equal to ~1e-7, not bit for bit)."""
    return [e["metrics"].pop("concept_masking") for e in record["explanations"]]


def test_model_reading_stages_follow_the_unit_not_its_position(model_jobs) -> None:
    whole, some = (_records(j) for j in model_jobs)
    assert sorted(some) == [2, 7]
    for unit in (2, 7):
        assert some[unit]["receptive_field"] is not None
        scores = _masking(some[unit])
        assert any(s is not None for s in scores)
        assert scores == pytest.approx(_masking(whole[unit]), rel=1e-6)
        assert some[unit] == whole[unit], unit
    rows = [_rows(j, "concept_blackout") for j in model_jobs]
    per_unit = [r for r in rows[1] if r.get("unit") is not None]
    assert {r["unit"] for r in per_unit} == {2, 7}
    assert per_unit == [r for r in rows[0] if r.get("unit") in (2, 7)]


def test_the_report_pages_the_chosen_units(model_jobs, tmp_path: Path) -> None:
    """Unit pages and tiles under the units' own indices, neighbours linked among them."""
    from ray_dissect import build_report
    from ray_dissect.results.job import JobResults

    build_report(JobResults(model_jobs[1]), tmp_path)
    pages = tmp_path / "units" / LAYER
    assert sorted(p.name for p in pages.glob("*.html")) == ["2.html", "7.html"]
    assert (pages / "2_rf.png").exists() and (pages / "7_rf.png").exists()
    two, seven = ((pages / f"{u}.html").read_text() for u in (2, 7))
    assert 'href="7.html" aria-keyshortcuts="j">unit 7 &rarr;' in two
    assert 'href="2.html" aria-keyshortcuts="k">&larr; unit 2 (k)' in seven
    assert "dissects 2 chosen units (a list): 2, 7" in (
        tmp_path / "layers" / f"{LAYER}.html").read_text()


def test_keep_chosen_takes_the_chosen_channels_of_arrays_and_tensors(tmp_path: Path) -> None:
    """The serial extraction's numpy maps and the pipeline's device tensors alike."""
    import torch

    from ray_dissect.job.layout import JobDir
    from ray_dissect.pipeline.context import WorkEnv

    env = WorkEnv(_spec(tmp_path, units=SUBSET), JobDir(tmp_path))
    maps = np.arange(2 * 12 * 2 * 2, dtype=np.float32).reshape(2, 12, 2, 2)
    np.testing.assert_array_equal(env.keep_chosen({LAYER: maps})[LAYER], maps[:, SUBSET])
    got = env.keep_chosen({LAYER: torch.from_numpy(maps)})[LAYER]
    assert got.is_contiguous()
    np.testing.assert_array_equal(got.numpy(), maps[:, SUBSET])
    whole = WorkEnv(_spec(tmp_path), JobDir(tmp_path)).keep_chosen({LAYER: maps})[LAYER]
    assert whole is maps
