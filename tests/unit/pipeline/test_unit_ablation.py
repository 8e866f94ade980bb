"""Unit ablation on planted colour-name units (red, green, blue, red -> GAP -> fixed head):
zeroing the red detectors changes only the images with red, and every row's numbers are the
head applied by hand to the stored activations with the units zeroed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ray_dissect.datasets.registry import open_dataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.job.layout import JobDir, done_marker
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "units.out"
W = np.array([[5.0, 0, 0, 5.0], [0, 10.0, 0, 0], [0, 0, 10.0, 0], [0, 0, 0, 0]])
B = np.array([0.0, 0.0, 0.0, 0.5])


def _spec(data: Path) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:color_name_classifier",
                  "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)}, "method": {"quantile": 0.02},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2},
        "studies": {"unit_ablation": {"single_units": True}}})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    base = tmp_path_factory.mktemp("ablation")
    data = generate_dataset(base / "ds", 40, seed=4, image_size=32, mask_size=16)
    out = base / "out"
    run_stages(_spec(data), out)
    rows = [json.loads(x) for x in (out / "studies" / "unit_ablation.jsonl")
            .read_text().splitlines()]
    return out, rows


def _present(out: Path, number: int) -> np.ndarray:
    """(N,) bool: the label is in an image's pixel layers or whole-image labels."""
    ds = open_dataset(parse_spec(json.loads((out / "spec.json").read_text())).dataset)
    return np.array([bool((ds.read_labels(i)[0] == number).any()
                          or number in ds.read_labels(i)[1]) for i in range(len(ds))])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _by_hand(out: Path, units: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) flips and probability drops of the unablated class, zeroing ``units``."""
    means = arrays.open_array(out / "activations.zarr", LAYER)[:].astype(np.float64)
    means = means.mean(axis=(2, 3))
    base = _softmax(means @ W.T + B)
    zeroed = means.copy()
    zeroed[:, units] = 0.0
    after = _softmax(zeroed @ W.T + B)
    cls, rows = base.argmax(1), np.arange(len(means))
    return after.argmax(1) != cls, base[rows, cls] - after[rows, cls]


def test_zeroing_the_red_detectors_changes_only_images_with_red(job) -> None:
    """The red group (units 0 and 3) flips images with red and leaves the others exactly."""
    out, rows = job
    (red,) = [r for r in rows if r["kind"] == "label" and r["label"]["name"] == "red"]
    assert red["units"] == [0, 3]
    has_red = _present(out, red["label"]["number"])
    assert red["with_concept"]["images"] == has_red.sum() > 0
    assert red["without_concept"] == {"images": int((~has_red).sum()), "flips": 0,
                                      "flip_fraction": 0.0, "probability_drop": 0.0}
    assert red["with_concept"]["flips"] > 0 and red["with_concept"]["probability_drop"] > 0


def test_every_row_is_the_head_applied_by_hand(job) -> None:
    """Flips and mean probability drops, overall and split by the label's presence."""
    out, rows = job
    for row in rows:
        flips, drops = _by_hand(out, row["units"])
        subsets = [("overall", np.ones(len(flips), dtype=bool))]
        if row["label"] is not None:
            present = _present(out, row["label"]["number"])
            subsets += [("with_concept", present), ("without_concept", ~present)]
        for name, keep in subsets:
            got = row[name]
            assert (got["images"], got["flips"]) == (keep.sum(), flips[keep].sum()), name
            if keep.any():
                assert got["probability_drop"] == pytest.approx(drops[keep].mean(), abs=1e-6)


def test_groups_are_the_interpretable_units_sharing_a_label(job) -> None:
    """One label row per interpretable label with exactly its units, then one row per unit."""
    out, rows = job
    records = list(read_unit_records(out / "records" / f"{LAYER}.jsonl"))
    want: dict[str, list[int]] = {}
    for rec in records:
        if rec.interpretable and rec.label is not None:
            want.setdefault(rec.label.name, []).append(rec.unit)
    got = {r["label"]["name"]: r["units"] for r in rows if r["kind"] == "label"}
    assert got == want and want["red"] == [0, 3]
    assert [r["units"] for r in rows if r["kind"] == "unit"] == [[u] for u in range(4)]


def test_a_lost_shard_is_redone_alone(job) -> None:
    """Removing one shard's done marker redoes that shard only; the rows are byte-identical."""
    out, _ = job
    first = (out / "studies" / "unit_ablation.jsonl").read_bytes()
    done_marker(JobDir(out).study_shard("unit_ablation", 1)).unlink()
    spec = parse_spec(json.loads((out / "spec.json").read_text()))
    run_stages(spec, out)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert {k: v["computed"] for k, v in stages.items() if v["computed"]} == {"unit_ablation": 1}
    assert (out / "studies" / "unit_ablation.jsonl").read_bytes() == first
