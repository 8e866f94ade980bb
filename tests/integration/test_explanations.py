"""Compositional and clustered explanations of planted units, through Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures.broden import Row, write_broden

from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.explain.formula import canonical_key, leaves, parse
from ray_dissect.records.io import read_unit_records
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
pytestmark = pytest.mark.usefixtures("ray_cluster")


def _run(root: Path, out: Path, factory: str, size: int, method: dict) -> list:
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:{factory}", "preprocess": {"size": size, **RAW}},
        "layers": ["out" if factory != "red_and_not_green" else "pool"],
        "dataset": {"root": str(root)}, "method": method,
        "resources": {"actors": 2, "batch_size": 16, "shard_images": 32, "units_per_task": 1}})
    run_job(spec, out)
    layer = spec.layers[0]
    return list(read_unit_records(out / "records" / f"{layer}.jsonl"))


def test_red_or_green_unit(generated: Path, tmp_path: Path) -> None:
    """A unit firing on red or green pixels is explained by `red OR green` (or an equivalent),
    and keeping only those pixels keeps its response (concept masking near 1)."""
    (rec,) = _run(generated, tmp_path / "o", "red_or_green", 64,
                  {"kind": "compositional", "length": 2, "quantile": 0.5,
                   "concept_masking": True, "masking_images": 24})
    (exp,) = rec.explanations
    names = _names(generated)
    found = parse(exp.text, names)
    assert canonical_key(found) == canonical_key(parse("red OR green", names)), exp.text
    assert exp.iou > 0.9 and exp.hi is None and exp.visited > 0
    assert exp.metrics is not None and exp.metrics.activation_coverage > 0.9
    assert exp.metrics.concept_masking is not None and exp.metrics.concept_masking > 0.95


def _and_not_dataset(root: Path, n: int = 40, seed: int = 0) -> Path:
    """Images paint concept `disc` red and `spot` green; `blob` is a blue distractor."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        layers = {}
        img = np.zeros((16, 16, 3), np.uint8)
        for cat, label, channel in (("object", 1, 0), ("part", 2, 1), ("material", 3, 2)):
            grid = np.zeros((8, 8), int)
            r, c = rng.integers(0, 5, size=2)
            h, w = rng.integers(2, 5, size=2)
            grid[r:r + h, c:c + w] = label
            layers[cat] = [grid]
            img[..., channel] = np.kron(grid > 0, np.ones((2, 2), int)).astype(np.uint8) * 255
        rows.append(Row(img, layers=layers))
    labels = {1: ("disc", {"object": 1.0}), 2: ("spot", {"part": 1.0}),
              3: ("blob", {"material": 1.0})}
    return write_broden(root, rows, labels)


def test_and_not_unit(tmp_path: Path) -> None:
    """A unit firing on `disc AND NOT spot` is explained exactly by it (IoU 1)."""
    root = _and_not_dataset(tmp_path / "ds")
    (rec,) = _run(root, tmp_path / "o", "red_and_not_green", 16,
                  {"kind": "compositional", "quantile": 0.5})
    exp = rec.explanations[0]
    assert exp.text == "disc AND NOT spot" and exp.iou == 1.0
    assert exp.formula is not None and exp.formula.op == "and"
    assert exp.best_unary is not None and exp.best_unary.name == "disc"


def test_clustered_levels(generated: Path, tmp_path: Path) -> None:
    """A unit at about 1 on red, 2 on green, 3 on blue: three ranges, one per colour."""
    (rec,) = _run(generated, tmp_path / "o", "color_levels", 64,
                  {"kind": "clustered", "clusters": 3, "length": 3})
    assert len(rec.explanations) == 3
    names = [e.best_unary.name for e in rec.explanations if e.best_unary]
    assert names == ["red", "green", "blue"]
    highs = [e.hi for e in rec.explanations]
    # Each range reaches its plateau and stops before the next k-means midpoint.
    assert 1.0 <= highs[0] < 1.5 and 2.0 <= highs[1] < 2.5 and abs(highs[2] - 3.0) < 1e-3
    for exp, color in zip(rec.explanations, ("red", "green", "blue"), strict=True):
        assert color in exp.text.split() and exp.iou > 0.6, (exp.text, exp.iou)
        assert exp.inclusive and exp.lo <= exp.hi


def test_clusters_one_is_the_quantile_mode(generated: Path, tmp_path: Path) -> None:
    """clusters: 1 gives exactly the compositional explanation of the quantile range."""
    method = {"length": 2, "quantile": 0.3}
    (a,) = _run(generated, tmp_path / "a", "red_or_green", 64,
                {"kind": "compositional", **method})
    (b,) = _run(generated, tmp_path / "b", "red_or_green", 64,
                {"kind": "clustered", "clusters": 1, **method})
    assert a.explanations == b.explanations and len(a.explanations) == 1
    assert len(leaves(parse(a.explanations[0].text, _names(generated)))) == 2


def _names(root: Path) -> list[str]:
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["fc"],
                       "dataset": {"root": str(root)}})
    return list(BrodenDataset(spec.dataset).vocab.names)
