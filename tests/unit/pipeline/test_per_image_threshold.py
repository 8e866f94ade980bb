"""``method: {kind: netdissect, threshold: per_image}``: inner-detectors' rule, each image's
mask above its own map's quantile, scored by the mean per-image IoU; every top concept of
every record recomputed densely from the stored maps and the label PNGs."""

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
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import DatasetSpec, parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}


def _dense_iou(maps: np.ndarray, q: float, concept: np.ndarray) -> float:
    """Mean over images with the concept of |M and L| / |M or L|, M the bilinear 16 x 16
    upsampling above the image's own 1 - q quantile; ``concept`` (N, 16, 16) bool."""
    t = np.quantile(maps.reshape(len(maps), -1).astype(np.float64), 1 - q, axis=1)
    up = F.interpolate(torch.from_numpy(maps[:, None]), size=(16, 16), mode="bilinear",
                       align_corners=False)[:, 0].numpy() > t[:, None, None]
    seen = concept.reshape(len(maps), -1).any(axis=1)
    inter = (up & concept).sum(axis=(1, 2))[seen]
    union = (up | concept).sum(axis=(1, 2))[seen]
    return float(np.mean(inter / union))


def test_records_hold_the_mean_per_image_iou(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "ds", 32, seed=8, image_size=32, mask_size=16)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:shifted_color_detectors",
                  "preprocess": {"size": 32, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "method": {"kind": "netdissect", "threshold": "per_image", "quantile": 0.5},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}})
    run_stages(spec, tmp_path / "out")
    acts = arrays.open_array(tmp_path / "out" / "activations.zarr", "pool")[:]
    ds = BrodenDataset(DatasetSpec(root=str(data)))
    labels = [ds.read_labels(i) for i in range(len(ds))]
    records = list(read_unit_records(tmp_path / "out" / "records" / "pool.jsonl"))
    assert len(records) == 3
    for rec in records:
        assert rec.threshold is None and rec.label is not None and rec.top
        for score in rec.top:
            concept = np.stack([(pixel == score.number).any(axis=0)
                                | bool((whole == score.number).any())
                                for pixel, whole in labels])
            assert score.iou == pytest.approx(_dense_iou(acts[:, rec.unit], 0.5, concept),
                                              abs=1e-12), (rec.unit, score.name)


def test_the_default_threshold_leaves_the_hash_alone() -> None:
    base = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/x"}}
    plain = parse_spec(base)
    same = parse_spec({**base, "method": {"kind": "netdissect", "threshold": "dataset"}})
    other = parse_spec({**base, "method": {"kind": "netdissect", "threshold": "per_image"}})
    assert plain.spec_hash() == same.spec_hash() != other.spec_hash()


def test_the_unit_page_masks_each_top_image_above_its_own_quantile(tmp_path: Path) -> None:
    """The tiles' mask pixels are those of each image's own median rule, counted densely."""
    from ray_dissect import build_report
    from ray_dissect.report.draw import row_plans
    from ray_dissect.results.job import JobResults

    data = generate_dataset(tmp_path / "ds", 16, seed=9, image_size=32, mask_size=16)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:shifted_color_detectors",
                  "preprocess": {"size": 32, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "method": {"kind": "netdissect", "threshold": "per_image", "quantile": 0.5},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 3}})
    run_stages(spec, tmp_path / "out")
    results = JobResults(tmp_path / "out")
    report = build_report(results, tmp_path / "site")
    page = (report.out / "units" / "pool" / "1.html").read_text()
    assert "threshold per image (each image&#39;s own 0.5 quantile)" in page
    acts = arrays.open_array(tmp_path / "out" / "activations.zarr", "pool")[:]
    (plan,) = [p for p in row_plans(results.records("pool")[1], 0.5) if p.kind == "top"]
    meta = (report.out / "_render").rglob("*.json")
    tiles = [t for f in meta for t in json.loads(f.read_text())["tiles"]
             if t["unit"] == 1]
    (row,) = [r for r in tiles[0]["rows"] if r["key"] == "top"]
    for (index, _), info in zip(plan.images, row["tiles"], strict=True):
        m = acts[index, 1]
        t = np.quantile(m.astype(np.float64), 0.5)
        up = F.interpolate(torch.from_numpy(m[None, None]), size=(16, 16), mode="bilinear",
                           align_corners=False)[0, 0].numpy()
        assert info["pixels"] == int((up > t).sum())
