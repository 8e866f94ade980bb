"""Range importance on a planted classifier (colour detectors -> GAP -> fixed linear head):
the flips per range equal a hook written here and the head applied by hand to the stored
activations; the ranges are the sorted k-means ranges."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ray_dissect.datasets.registry import open_dataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

PLANTED = Path(__file__).parents[2] / "fixtures" / "planted.py"
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "units.pool"


def _planted() -> object:
    spec = importlib.util.spec_from_file_location("planted_fixture", PLANTED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(data: Path, bounds: str) -> object:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:color_classifier", "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 3, "length": 1, "beam": 2,
                   "bounds": bounds},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2},
        "studies": {"ranges_importance": {}}})


@pytest.fixture(scope="module", params=["inclusive", "strict"])
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[Path, str, list[dict]]:
    base = tmp_path_factory.mktemp("ranges")
    data = generate_dataset(base / "ds", 40, seed=4, image_size=32, mask_size=16)
    out = base / "out"
    run_stages(_spec(data, request.param), out)
    rows = [json.loads(x) for x in (out / "studies" / "ranges_importance.jsonl")
            .read_text().splitlines()]
    return out, request.param, rows


def _inside(a: torch.Tensor, lo: np.ndarray, hi: np.ndarray, bounds: str) -> torch.Tensor:
    low = torch.tensor(lo)[None, :, None, None]
    high = torch.tensor(hi)[None, :, None, None]
    a = a.double()
    return (a >= low) & (a <= high) if bounds == "inclusive" else (a > low) & (a < high)


def _hooked_classes(model: torch.nn.Module, x: torch.Tensor, lo: np.ndarray, hi: np.ndarray,
                    bounds: str) -> np.ndarray:
    """Argmax classes with the detectors' output masked in [lo, hi] by a hook written here."""
    def hook(_m: object, _i: object, out: torch.Tensor) -> torch.Tensor:
        return out.masked_fill(_inside(out, lo, hi, bounds), 0.0)

    handle = model.units.pool.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x).argmax(1).numpy()
    finally:
        handle.remove()


def _images(out: Path) -> torch.Tensor:
    spec = json.loads((out / "spec.json").read_text())
    ds = open_dataset(parse_spec(spec).dataset)
    x = np.stack([ds.read_image(i) for i in range(len(ds))]).astype(np.float32) / 255
    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def _bounds(ranges: np.ndarray, k: int, unit: int | None) -> tuple[np.ndarray, np.ndarray]:
    lo = np.where(np.isnan(ranges[:, k, 0]), np.inf, ranges[:, k, 0])
    hi = np.where(np.isnan(ranges[:, k, 1]), -np.inf, ranges[:, k, 1])
    if unit is not None:
        keep = np.arange(len(lo)) == unit
        lo, hi = np.where(keep, lo, np.inf), np.where(keep, hi, -np.inf)
    return lo, hi


def test_flips_equal_an_independent_hook(job: tuple[Path, str, list[dict]]) -> None:
    """Every row's flips (all units, and each unit alone) are the argmax changes of a hook
    zeroing the same range on every image."""
    out, bounds, rows = job
    ranges = np.load(out / "thresholds" / f"{LAYER}.npz")["ranges"]
    model, x = _planted().color_classifier(), _images(out)
    with torch.no_grad():
        base = model(x).argmax(1).numpy()
    assert len(rows) == 3 * (1 + 3)
    for row in rows:
        lo, hi = _bounds(ranges, row["range_index"], row["unit"])
        want = int((_hooked_classes(model, x, lo, hi, bounds) != base).sum())
        assert (row["flips"], row["images"]) == (want, 40), row
        assert row["flip_fraction"] == pytest.approx(want / 40)
    assert any(r["flips"] for r in rows)


def test_flips_equal_the_head_applied_by_hand(job: tuple[Path, str, list[dict]]) -> None:
    """Known answer: logits = W mean(units) + b, with the stored activations zeroed in numpy."""
    out, bounds, rows = job
    acts = arrays.open_array(out / "activations.zarr", LAYER)[:].astype(np.float64)
    ranges = np.load(out / "thresholds" / f"{LAYER}.npz")["ranges"]
    w = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0], [0, 0, 0]])
    b = np.array([0, 0, 0, 0.3])
    base = (acts.mean(axis=(2, 3)) @ w.T + b).argmax(1)
    for row in (r for r in rows if r["unit"] is None):
        lo, hi = ranges[:, row["range_index"], 0], ranges[:, row["range_index"], 1]
        lo, hi = lo[None, :, None, None], hi[None, :, None, None]
        inside = (acts >= lo) & (acts <= hi) if bounds == "inclusive" else \
            (acts > lo) & (acts < hi)
        zeroed = np.where(inside, 0.0, acts).mean(axis=(2, 3)) @ w.T + b
        assert row["flips"] == int((zeroed.argmax(1) != base).sum())
        assert row["units_zeroed"] == 3


def test_ranges_are_sorted_by_lower_bound(job: tuple[Path, str, list[dict]]) -> None:
    """Unit rows of range k carry the unit's k-th k-means range, ascending in k."""
    _, _, rows = job
    for unit in range(3):
        mine = sorted((r for r in rows if r["unit"] == unit), key=lambda r: r["range_index"])
        assert [r["range_index"] for r in mine] == [0, 1, 2]
        assert all(a["hi"] < b["lo"] for a, b in itertools.pairwise(mine))


@pytest.mark.parametrize(("bounds", "want"), [("inclusive", [1, 0, 2]), ("strict", [0, 0, 0])])
def test_hand_computed_flips_on_the_four_images(four_images: Path, tmp_path: Path,
                                                bounds: str, want: list[int]) -> None:
    """The red unit takes the values 100, 200 and 250 (/255): three one-value ranges. Zeroing
    100 turns image 2 (mean 100/255, logit 3.9) to class 1 (logit 1); zeroing 200 leaves image
    1 at 10 * 500/16/255 = 1.23 > 1; zeroing 250 flips images 0 and 1. Strict bounds hold
    nothing inside a one-value range."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:red_classifier", "preprocess": {"size": 8, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(four_images)},
        "method": {"kind": "clustered", "clusters": 3, "length": 1, "beam": 2,
                   "bounds": bounds},
        "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1},
        "studies": {"ranges_importance": {}}})
    run_stages(spec, tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "studies" / "ranges_importance.jsonl")
            .read_text().splitlines()]
    layer_rows = [r for r in rows if r["unit"] is None]
    assert [r["flips"] for r in layer_rows] == want
    assert [r["flips"] for r in rows if r["unit"] == 0] == want
    assert [(r["lo"], r["hi"]) for r in rows if r["unit"] == 0] == [
        (pytest.approx(v / 255), pytest.approx(v / 255)) for v in (100, 200, 250)]
