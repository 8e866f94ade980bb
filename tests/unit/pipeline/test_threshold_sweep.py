"""The threshold sweep: each high-tail quantile's labels equal a separate NetDissect run at
that quantile; the low tail's masks are the pixels below T_q, counted independently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.stages.threshold_sweep import tail_range
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import DatasetSpec, parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
QUANTILES = [0.01, 0.05, 0.2, 0.9]


def _spec(data: Path, **extra: object):
    return parse_spec({
        "model": {"factory": f"{PLANTED}:shifted_color_detectors",
                  "preprocess": {"size": 32, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}, **extra})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    base = tmp_path_factory.mktemp("sweep")
    data = generate_dataset(base / "ds", 40, seed=4, image_size=32, mask_size=16)
    run_stages(_spec(data, studies={"threshold_sweep": {"quantiles": QUANTILES}}),
               base / "out")
    rows = [json.loads(x) for x in (base / "out" / "studies" / "threshold_sweep.jsonl")
            .read_text().splitlines()]
    return data, base, rows


@pytest.mark.parametrize("q", [0.01, 0.05, 0.2])
def test_high_tail_labels_equal_a_netdissect_run_at_that_quantile(sweep, q: float) -> None:
    """Units with no exact zeros: the sweep's label and IoU at q are those of `quantile: q`."""
    data, base, rows = sweep
    run_stages(_spec(data, method={"quantile": q}), base / f"nd{q}")
    want = {r.unit: r for r in read_unit_records(base / f"nd{q}" / "records" / "pool.jsonl")}
    got = [r for r in rows if r["quantile"] == q and r["unit"] is not None]
    assert len(got) == 3
    for row in got:
        ref = want[row["unit"]]
        assert row["tail"] == "high" and row["threshold"] == pytest.approx(ref.threshold)
        assert row["label"]["name"] == ref.label.name
        assert row["label"]["iou"] == pytest.approx(ref.label.iou, abs=1e-12)
        assert row["mask_pixels"] == ref.mask_pixels


def test_low_tail_masks_are_the_pixels_below_the_quantile(sweep) -> None:
    """At q = 0.9 the mask is 0 < upsampled value < T, T the 0.1 quantile of the values."""
    _, base, rows = sweep
    acts = arrays.open_array(base / "out" / "activations.zarr", "pool")[:]
    for row in (r for r in rows if r["quantile"] == 0.9 and r["unit"] is not None):
        values = acts[:, row["unit"]].astype(np.float64).ravel()
        t = np.quantile(values, 0.1)
        up = F.interpolate(torch.from_numpy(acts[:, row["unit"]:row["unit"] + 1]), size=(16, 16),
                           mode="bilinear", align_corners=False).numpy()
        assert row["tail"] == "low" and row["threshold"] == pytest.approx(t)
        assert row["mask_pixels"] == int(((up > 0) & (up < t)).sum())


def test_category_shares_count_the_interpretable_labels(sweep) -> None:
    """Each (layer, quantile) row's shares are the categories of its labels with IoU >= 0.04."""
    _, _, rows = sweep
    for q in QUANTILES:
        labels = [r["label"] for r in rows
                  if r["quantile"] == q and r["unit"] is not None and r["label"]]
        good = [lab["category"] for lab in labels if lab["iou"] >= 0.04]
        (share,) = [r for r in rows if r["quantile"] == q and r["unit"] is None]
        assert share["category_shares"] == {c: good.count(c) / len(good) for c in set(good)}


def test_tails_keep_or_drop_the_exact_zeros_of_nonnegative_units() -> None:
    """zeros: drop (CCE) leaves post-ReLU zeros out of the quantile; keep (the default)
    counts them as the job's thresholds do; negative units keep theirs either way."""
    relu = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    nonzero = [1, 2, 3, 4, 5]
    assert tail_range(relu, 0.2, True) == (pytest.approx(np.quantile(nonzero, 0.8)), np.inf)
    assert tail_range(relu, 0.8, True) == (0.0, pytest.approx(np.quantile(nonzero, 0.2)))
    assert tail_range(relu, 0.2) == (pytest.approx(np.quantile(relu, 0.8)), np.inf)
    assert tail_range(relu, 0.8) == (0.0, pytest.approx(np.quantile(relu, 0.2)))
    signed = np.array([-2.0, 0.0, 0.0, 4.0])
    for drop in (False, True):
        assert tail_range(signed, 0.75, drop) == (-np.inf,
                                                  pytest.approx(np.quantile(signed, 0.25)))


def test_zeros_keep_equals_a_job_and_drop_is_cce(tmp_path: Path) -> None:
    """Post-ReLU colour detectors (many exact zeros): with zeros: keep the sweep's threshold
    and label at q are those of a job with quantile: q; with zeros: drop the threshold is the
    1 - q quantile of the unit's non-zero values (CCE), a different one."""
    data = generate_dataset(tmp_path / "ds", 24, seed=5, image_size=32, mask_size=16)
    model = {"factory": f"{PLANTED}:color_detectors", "preprocess": {"size": 32, **RAW}}
    q, rows = 0.2, {}
    for zeros in ("keep", "drop"):
        run_stages(_spec(data, model=model, studies={"threshold_sweep": {
            "quantiles": [q], "zeros": zeros}}), tmp_path / zeros)
        rows[zeros] = {r["unit"]: r for r in map(json.loads, (
            tmp_path / zeros / "studies" / "threshold_sweep.jsonl").read_text().splitlines())
            if r["unit"] is not None}
    run_stages(_spec(data, model=model, method={"quantile": q}), tmp_path / "job")
    job = {r.unit: r for r in read_unit_records(tmp_path / "job" / "records" / "pool.jsonl")}
    acts = arrays.open_array(tmp_path / "job" / "activations.zarr", "pool")[:]
    differ = 0
    for unit, row in rows["keep"].items():
        assert row["threshold"] == pytest.approx(job[unit].threshold)
        assert row["label"]["name"] == job[unit].label.name
        assert row["label"]["iou"] == pytest.approx(job[unit].label.iou, abs=1e-12)
        values = acts[:, unit].astype(np.float64).ravel()
        assert (values == 0).mean() > q  # zeros reach into the tail: the conventions differ
        cce = np.quantile(values[values != 0], 1 - q)
        assert rows["drop"][unit]["threshold"] == pytest.approx(cce)
        differ += rows["drop"][unit]["threshold"] != pytest.approx(row["threshold"])
    assert differ == len(rows["keep"]) == 3


def test_compositional_jobs_get_formulas_per_quantile(sweep, tmp_path: Path) -> None:
    """With a compositional method each unit row at each quantile carries a formula."""
    data, _, _ = sweep
    run_stages(_spec(data, method={"kind": "compositional", "length": 2, "beam": 2},
                     studies={"threshold_sweep": {"quantiles": [0.05, 0.9]}}), tmp_path / "c")
    rows = [json.loads(x) for x in (tmp_path / "c" / "studies" / "threshold_sweep.jsonl")
            .read_text().splitlines()]
    unit_rows = [r for r in rows if r["unit"] is not None]
    assert len(unit_rows) == 6 and all(r["formula"] and r["formula_iou"] > 0 for r in unit_rows)


def test_per_image_rule_is_the_mean_of_per_image_ious(sweep, tmp_path: Path) -> None:
    """rule per_image: threshold = each image's own median (q = 0.5), score = mean over the
    images with the concept of the per-image IoU, recomputed densely from the label PNGs."""
    data, _, _ = sweep
    run_stages(_spec(data, studies={"threshold_sweep": {"quantiles": [0.5],
                                                        "rule": "per_image"}}), tmp_path / "p")
    rows = [json.loads(x) for x in (tmp_path / "p" / "studies" / "threshold_sweep.jsonl")
            .read_text().splitlines()]
    acts = arrays.open_array(tmp_path / "p" / "activations.zarr", "pool")[:]
    ds = BrodenDataset(DatasetSpec(root=str(data)))
    labels = [ds.read_labels(i) for i in range(len(ds))]
    for row in (r for r in rows if r["unit"] is not None):
        maps = acts[:, row["unit"]]
        t = np.quantile(maps.reshape(len(maps), -1).astype(np.float64), 0.5, axis=1)
        up = F.interpolate(torch.from_numpy(maps[:, None]), size=(16, 16), mode="bilinear",
                           align_corners=False)[:, 0].numpy() > t[:, None, None]
        number, ious = row["label"]["number"], []
        for x, (pixel, whole) in enumerate(labels):
            concept = (pixel == number).any(axis=0) | bool((whole == number).any())
            if concept.any():
                union = (up[x] | concept).sum()
                ious.append((up[x] & concept).sum() / union)
        assert row["threshold"] is None and row["tail"] == "high"
        assert row["label"]["iou"] == pytest.approx(np.mean(ious), abs=1e-12)


def test_one_unit_per_pass_gives_the_same_sweep(sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a signature budget of one byte every unit is swept in a pass of its own: same
    rows."""
    from ray_dissect.pipeline.stages import threshold_sweep

    data, base, _ = sweep
    calls: list[tuple[int, int]] = []
    real = threshold_sweep.mask_work

    def spy(job, layer, units, *args):  # type: ignore[no-untyped-def]
        calls.append(units)
        return real(job, layer, units, *args)

    monkeypatch.setattr(threshold_sweep, "mask_work", spy)
    spec = _spec(data, studies={"threshold_sweep": {"quantiles": QUANTILES}})
    tiny = spec.resources.model_copy(update={"signature_mb": 2.0**-20})
    run_stages(spec.model_copy(update={"resources": tiny}), base / "split")
    assert sorted(calls) == [(u, u + 1) for u in range(3)]
    rows = "studies/threshold_sweep.jsonl"
    assert (base / "split" / rows).read_bytes() == (base / "out" / rows).read_bytes()
