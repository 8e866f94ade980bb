"""The whole job on the shared Ray cluster: ground truth, determinism, reuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.hand import HAND_CATEGORY, HAND_PLAIN
from fixtures.planted import COLOR_UNITS
from PIL import Image

from ray_dissect.errors import SpecError
from ray_dissect.records.io import read_unit_records
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _records(out: Path, layer: str) -> list:
    return list(read_unit_records(out / "records" / f"{layer}.jsonl"))


@pytest.mark.parametrize(("denominator", "hand"),
                         [("plain", HAND_PLAIN), ("category", HAND_CATEGORY)])
def test_four_image_fixture_through_ray(four_images: Path, tmp_path: Path, denominator: str,
                                        hand: dict) -> None:
    """Records of the hand-computed fixture match every fraction to 1e-9."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel", "preprocess": {"size": 8, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(four_images)},
        "method": {"quantile": 0.1, "denominator": denominator, "top_k": 8},
        "resources": {"actors": 2, "batch_size": 2, "shard_images": 2, "units_per_task": 1}})
    summary = run_job(spec, tmp_path / "out")
    (rec,) = _records(tmp_path / "out", "pool")
    assert rec.label is not None and rec.label.name == "red" and rec.mask_pixels == 7
    scores = {c.name: c.iou for c in rec.top}
    for name, value in hand.items():
        assert abs(scores.get(name, 0.0) - float(value)) < 1e-9, name
    assert rec.per_category["part"].iou == pytest.approx(float(hand["lid"]), abs=1e-9)
    assert summary.layers[0].interpretable == 1 and summary.images == 4


def _dense_color_iou(root: Path, acts: np.ndarray, unit: int, label: int, q: float) -> float:
    """Independent dense IoU: threshold, mask and label decoded straight from the files."""
    import csv

    rows = list(csv.DictReader((root / "index.csv").open()))
    t = np.quantile(acts[:, unit].astype(np.float64), 1 - q)
    inter = union = 0
    for i, row in enumerate(rows):
        rgb = np.asarray(Image.open(root / "images" / row["color"]), dtype=np.int64)
        lab = (rgb[..., 0] + 256 * rgb[..., 1]) == label
        b = acts[i, unit] > t
        inter += int((b & lab).sum())
        union += int((b | lab).sum())
    return inter / union


def test_planted_color_detectors(generated: Path, tmp_path: Path) -> None:
    """Units planted as red/green/blue detectors get those colour labels, with the dense IoUs.

    (The blue detector's best concept overall may be ``water``, which the generator draws
    blue: a true finding, so the colour category's label is what is checked.)
    """
    q = 0.05
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:color_detectors", "preprocess": {"size": 64, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(generated)}, "method": {"quantile": q},
        "resources": {"actors": 2, "batch_size": 16, "shard_images": 32, "units_per_task": 2}})
    run_job(spec, tmp_path / "out")
    records = _records(tmp_path / "out", "pool")
    acts = arrays.open_array(tmp_path / "out" / "activations.zarr", "pool")[:]
    for unit, color in enumerate(COLOR_UNITS):
        best = records[unit].per_category["color"]
        assert best.name == color, (unit, best)
        want = _dense_color_iou(generated, acts, unit, best.number, q)
        assert abs(best.iou - want) < 1e-9
        assert best.iou > 0.1


def _demo_like(root: Path, actors: int) -> object:
    return parse_spec({
        "model": {"factory": "ray_dissect.zoo:efficientnet_lite0", "preprocess": {"size": 64}},
        "layers": ["_blocks.5", "_bn1"], "dataset": {"root": str(root), "limit": 48},
        "resources": {"actors": actors, "batch_size": 8, "shard_images": 16,
                      "units_per_task": 700}})


def test_one_and_two_actors_are_bit_identical(generated: Path, tmp_path: Path) -> None:
    """A real pretrained model: the store and the records do not depend on the actor count."""
    run_job(_demo_like(generated, 1), tmp_path / "a1")
    run_job(_demo_like(generated, 2), tmp_path / "a2")
    for layer in ("_blocks.5", "_bn1"):
        one = arrays.open_array(tmp_path / "a1" / "activations.zarr", layer)[:]
        two = arrays.open_array(tmp_path / "a2" / "activations.zarr", layer)[:]
        assert one.tobytes() == two.tobytes() and np.abs(one).sum() > 0
        assert _records(tmp_path / "a1", layer) == _records(tmp_path / "a2", layer)


def test_rerun_reuses_and_other_spec_is_refused(four_images: Path, tmp_path: Path) -> None:
    """The same spec on the same directory redoes nothing; another spec is refused."""
    raw = {"model": {"factory": f"{PLANTED}:red_channel", "preprocess": {"size": 8, **RAW}},
           "layers": ["pool"], "dataset": {"root": str(four_images)}, "method": {"quantile": 0.1},
           "resources": {"batch_size": 2, "shard_images": 2}}
    out = tmp_path / "out"
    run_job(parse_spec(raw), out)
    stamp = (out / "activations" / "bad_000000.json").stat().st_mtime_ns
    first = _records(out, "pool")
    run_job(parse_spec(raw), out)
    assert (out / "activations" / "bad_000000.json").stat().st_mtime_ns == stamp
    assert _records(out, "pool") == first
    raw["method"] = {"quantile": 0.2}
    with pytest.raises(SpecError, match="holds a different job"):
        run_job(parse_spec(raw), out)
