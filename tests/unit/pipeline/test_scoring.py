"""Scoring in passes of units: a clustered job scored one unit per pass (a signature budget
of one byte) writes the same records as one pass per block, the passes respect the bound, and
the bound holds for the masks the stage computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ray_dissect import storage
from ray_dissect.concepts.index import load_index
from ray_dissect.datasets.registry import open_dataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.explain.ranges import range_specs
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.stages import scoring
from ray_dissect.spec import parse_spec

PLANTED = Path(__file__).parents[2] / "fixtures" / "planted.py"
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYER = "body.out"


def _spec(data: Path, signature_mb: float = 512.0) -> object:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:named_colors_with_head",
                  "preprocess": {"size": 32, **RAW}},
        "layers": [LAYER], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 3, "length": 2, "beam": 3},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 6,
                      "signature_mb": signature_mb}})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[tuple[int, int]]]:
    """(one pass per block, one pass per unit, the units of every mask_work call of the
    latter)."""
    base = tmp_path_factory.mktemp("scoring")
    data = generate_dataset(base / "ds", 48, seed=6, image_size=32, mask_size=16)
    run_stages(_spec(data), base / "whole")
    calls: list[tuple[int, int]] = []
    real = scoring.mask_work

    def spy(job, layer, units, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(units)
        return real(job, layer, units, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scoring, "mask_work", spy)
        run_stages(_spec(data, signature_mb=2.0**-20), base / "split")
    return base / "whole", base / "split", calls


def test_one_unit_per_pass_writes_the_same_records(runs) -> None:
    whole, split, calls = runs
    assert sorted(calls) == [(u, u + 1) for u in range(12)]
    for path in sorted((whole / "records").glob("*.jsonl")):
        assert (split / "records" / path.name).read_bytes() == path.read_bytes()
    assert any(path.stat().st_size for path in (whole / "records").glob("*.jsonl"))


def _block(out: Path, units: tuple[int, int]):  # type: ignore[no-untyped-def]
    job = JobDir(out)
    spec = _spec(Path(out).parent / "ds")
    index = load_index(job.concept_index, open_dataset(spec.dataset).vocab)
    z = storage.load_npz(job.thresholds(LAYER))
    specs = range_specs(z["thresholds"][units[0]:units[1]], z["ranges"][units[0]:units[1]],
                        False)
    return job, index, specs


def test_passes_respect_the_bound_and_the_bound_holds(runs) -> None:
    whole, _, _ = runs
    units = (0, 6)
    job, index, specs = _block(whole, units)
    bound = scoring.signature_bounds(job, LAYER, units, specs, index, 16)
    masks = scoring.mask_work(job, LAYER, units, specs, index, 16)
    entries = np.array([sum(len(per[u].counts) for per in masks) for u in range(6)])
    assert np.all(bound >= entries) and entries.sum() > 0
    budget = int(np.sort(bound)[-2] + bound.min()) * scoring.ENTRY_BYTES
    passes = scoring.signature_passes(job, LAYER, units, specs, index, 16, budget)
    assert [a for a, _ in passes] == [0, *[b for _, b in passes[:-1]]] and passes[-1][1] == 6
    assert 1 < len(passes) < 6
    for a, b in passes:
        assert b - a == 1 or bound[a:b].sum() * scoring.ENTRY_BYTES <= budget
    roomy = int(6 * len(specs) * len(index.image_sets) * scoring.ENTRY_BYTES)
    assert scoring.signature_passes(job, LAYER, units, specs, index, 16, roomy) == [(0, 6)]


@pytest.mark.parametrize(("entries", "budget", "want"), [
    ([3, 3, 3], 6, [(0, 2), (2, 3)]),
    ([3, 9, 1, 1], 5, [(0, 1), (1, 2), (2, 4)]),
    ([0, 0], 0, [(0, 2)]),
    ([1, 1], 0, [(0, 1), (1, 2)]),
    ([], 10, []),
])
def test_unit_passes_are_consecutive_and_fill_the_budget(entries, budget, want) -> None:
    assert scoring.unit_passes(np.array(entries, dtype=np.int64), budget) == want
