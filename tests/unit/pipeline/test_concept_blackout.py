"""Concept blackout on planted colour detectors (unit = relu of a channel difference, averaged
2x2): Delta per (unit, concept) equals the hand computation on the images, the IoUs are the
scoring stage's and the correlation is Pearson's over the units."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ray_dissect.datasets.registry import open_dataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "units.pool"
DETECTORS = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


def _run(data: Path, out: Path, **blackout: object) -> list[dict]:
    run_stages(parse_spec({
        "model": {"factory": f"{PLANTED}:color_classifier", "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)}, "method": {"top_k": 100},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2},
        "studies": {"concept_blackout": blackout}}), out)
    return [json.loads(x) for x in (out / "studies" / "concept_blackout.jsonl")
            .read_text().splitlines()]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    base = tmp_path_factory.mktemp("blackout")
    data = generate_dataset(base / "ds", 40, seed=4, image_size=32, mask_size=16)
    return data, base / "out", _run(data, base / "out")


def _hand_sums(data: Path, n: int) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """Per concept: sum over its images of each detector's mean before and after blacking
    it out (pixels of the 2x-upsampled mask set to 0), and the number of images."""
    ds = open_dataset(parse_spec({"model": {"name": "resnet18"}, "layers": ["x"],
                                  "dataset": {"root": str(data)}}).dataset)
    sums: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
    for i in range(n):
        rgb = ds.read_image(i).astype(np.float64) / 255
        units = np.maximum(rgb @ DETECTORS.T, 0.0)  # (32, 32, 3): a detector per channel
        pixel, _ = ds.read_labels(i)
        for c in (c for c in np.unique(pixel) if c):
            mask = np.kron((pixel == c).any(axis=0), np.ones((2, 2))).astype(bool)
            before, after, k = sums.get(int(c), (np.zeros(3), np.zeros(3), 0))
            sums[int(c)] = (before + units.mean(axis=(0, 1)),
                            after + np.where(mask[..., None], 0.0, units).mean(axis=(0, 1)),
                            k + 1)
    return sums


def test_delta_is_the_hand_computed_change(job) -> None:
    """Delta(u, c) = sum after / sum before - 1 for every unit and pixel concept; blacking
    out red takes most of the red detector's activation away."""
    data, _, rows = job
    hand = _hand_sums(data, 40)
    unit_rows = [r for r in rows if r["unit"] is not None]
    assert {r["concept"]["number"] for r in unit_rows} == set(hand)
    for row in unit_rows:
        before, after, k = hand[row["concept"]["number"]]
        u = row["unit"]
        assert row["images"] == k
        if before[u] == 0:
            assert row["delta"] is None
        else:
            assert row["delta"] == pytest.approx(after[u] / before[u] - 1, abs=1e-5)
    (red,) = [r for r in unit_rows if r["concept"]["name"] == "red" and r["unit"] == 0]
    assert red["delta"] < -0.5


def test_ious_are_the_scoring_stages_and_r_is_pearsons(job) -> None:
    """Each unit row's IoU is the record's IoU of that concept (0 when not listed); the
    concept row's r and p are scipy's over the units."""
    _, out, rows = job
    records = {r.unit: {c.number: c.iou for c in r.top}
               for r in read_unit_records(out / "records" / f"{LAYER}.jsonl")}
    for row in (r for r in rows if r["unit"] is not None):
        want = records[row["unit"]].get(row["concept"]["number"], 0.0)
        assert row["iou"] == pytest.approx(want, abs=1e-12)
    checked = 0
    for row in (r for r in rows if r["unit"] is None):
        mine = [r for r in rows if r["unit"] is not None and r["concept"] == row["concept"]]
        pairs = [(r["iou"], r["delta"]) for r in mine if r["delta"] is not None]
        assert row["units"] == len(pairs)
        x, y = np.array(pairs).T if pairs else (np.zeros(0), np.zeros(0))
        if len(pairs) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
            want = stats.pearsonr(x, y)
            assert (row["pearson_r"], row["pearson_p"]) == pytest.approx(
                (want.statistic, want.pvalue))
            checked += 1
        else:
            assert row["pearson_r"] is None
    assert checked > 0


def test_limit_takes_the_first_images(job, tmp_path: Path) -> None:
    """With limit 16 only images 0-15 are blacked out."""
    data, _, _ = job
    hand = _hand_sums(data, 16)
    rows = _run(data, tmp_path / "out", limit=16)
    got = {r["concept"]["number"]: r["images"] for r in rows if r["unit"] is None}
    assert got == {c: k for c, (_, _, k) in hand.items()}
