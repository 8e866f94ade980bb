"""The top-images stage against an independent dense computation in the test.

Rule A (units): the k images with the largest spatial maximum, ties to the lower index.
Rule B (ranges): the k images with the most pixels of the range's mask, recomputed here by
upsampling every map with torch directly, ties to the lower index; random samples re-drawn
with numpy from the images with any pixel.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.job.manifest import read_manifest
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.records.schema import UnitRecord
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
K, SAMPLES, SEED = 5, 3, 11


def _clustered_spec(data: Path, **top: object) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:color_detectors", "preprocess": {"size": 32, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "method": {"kind": "clustered", "clusters": 3, "length": 1, "beam": 2},
        "top_images": {"k": K, "samples": SAMPLES, "seed": SEED, **top},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}})


@pytest.fixture(scope="module")
def clustered_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[UnitRecord]]:
    """A clustered job (3 ranges per unit) of planted colour detectors, run in-process."""
    base = tmp_path_factory.mktemp("top")
    data = generate_dataset(base / "ds", 40, seed=5, image_size=32, mask_size=16)
    run_stages(_clustered_spec(data), base / "out")
    return base / "out", list(read_unit_records(base / "out" / "records" / "pool.jsonl"))


def test_top_images_by_mean_redo_only_that_stage(clustered_job, tmp_path: Path) -> None:
    """``top_images.score: mean`` on a copy of the job with --force: only the top_images stage
    is redone (the other stages' hashes do not cover it), and each unit's top images are the
    k largest map means of a dense sort, ties to the lower index."""
    out = tmp_path / "out"
    shutil.copytree(clustered_job[0], out)
    data = Path(json.loads((out / "spec.json").read_text())["dataset"]["root"])
    before = {name: s.hash for name, s in read_manifest(out).stages.items()}
    run_stages(_clustered_spec(data, score="mean"), out, force=True)
    after = {name: s.hash for name, s in read_manifest(out).stages.items()}
    assert [n for n in after if after[n] != before.get(n)] == ["top_images"]
    acts = arrays.open_array(out / "activations.zarr", "pool")[:]
    for rec in read_unit_records(out / "records" / "pool.jsonl"):
        means = acts[:, rec.unit].reshape(len(acts), -1).mean(axis=1, dtype=np.float64)
        want = _ranked(means.astype(np.float32), K, np.ones(len(acts), bool))
        assert [(t.index, t.value) for t in rec.top_images] == [
            (i, pytest.approx(v)) for i, v in want]


def _ranked(scores: np.ndarray, k: int, keep: np.ndarray) -> list[tuple[int, float]]:
    """Dense reference: sort every kept image by (score desc, index asc), take k."""
    order = sorted((i for i in range(len(scores)) if keep[i]), key=lambda i: (-scores[i], i))
    return [(i, float(scores[i])) for i in order[:k]]


def _range_pixels(acts: np.ndarray, unit: int, lo: float, hi: float | None,
                  inclusive: bool) -> np.ndarray:
    """Pixels per image of the unit's mask in [lo, hi] (or (lo, hi)), upsampled to 16 x 16."""
    maps = torch.from_numpy(acts[:, unit:unit + 1].astype(np.float32))
    up = F.interpolate(maps, size=(16, 16), mode="bilinear", align_corners=False)[:, 0].numpy()
    top = np.inf if hi is None else hi
    inside = (up >= lo) & (up <= top) if inclusive else (up > lo) & (up < top)
    return inside.reshape(len(up), -1).sum(axis=1)


def test_unit_top_images_are_the_dense_top_maxima(clustered_job) -> None:
    """Each unit's top images are its k largest map maxima, sorted, ties to the lower index."""
    out, records = clustered_job
    acts = arrays.open_array(out / "activations.zarr", "pool")[:]
    for rec in records:
        maxima = acts[:, rec.unit].reshape(len(acts), -1).max(axis=1)
        want = _ranked(maxima, K, np.ones(len(acts), bool))
        got = [(t.index, t.value) for t in rec.top_images]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [v for _, v in got] == pytest.approx([v for _, v in want])


def test_range_top_images_are_the_dense_top_mask_counts(clustered_job) -> None:
    """Each explained range's top images have the most pixels of the scored mask; ties
    (several images with equal counts) go to the lower index; counts add up to the mask."""
    out, records = clustered_job
    acts = arrays.open_array(out / "activations.zarr", "pool")[:]
    ties = 0
    for rec in records:
        assert len(rec.explanations) == 3
        for exp in rec.explanations:
            pixels = _range_pixels(acts, rec.unit, exp.lo, exp.hi, exp.inclusive)
            assert pixels.sum() == exp.mask_pixels  # the very mask the scoring stage scored
            want = _ranked(pixels.astype(float), K, pixels > 0)
            assert [(t.index, t.pixels) for t in exp.top_images] == [(i, int(p)) for i, p in want]
            ties += len({p for _, p in want}) < len(want)
    assert ties > 0  # the data has tied counts, so the tie rule was exercised


def test_random_samples_are_seeded_draws_among_images_in_range(clustered_job) -> None:
    """Samples are drawn without replacement from the images with any mask pixel, by
    numpy's generator seeded with (seed, range, unit), and listed ascending."""
    out, records = clustered_job
    acts = arrays.open_array(out / "activations.zarr", "pool")[:]
    for rec in records:
        for r, exp in enumerate(rec.explanations, start=1):  # k-means ranges follow range 0
            pool = np.flatnonzero(_range_pixels(acts, rec.unit, exp.lo, exp.hi, exp.inclusive))
            rng = np.random.default_rng([SEED, r, rec.unit])
            want = np.sort(rng.choice(pool, size=min(SAMPLES, pool.size), replace=False))
            assert exp.samples is not None and exp.samples.seed == SEED
            assert [s.index for s in exp.samples.images] == want.tolist()


def test_netdissect_records_get_unit_top_images_only(four_images: Path, tmp_path: Path) -> None:
    """Images 0 and 1 tie at the red channel's maximum (250 / 255): the lower index first."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:red_channel", "preprocess": {"size": 8, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(four_images)},
        "top_images": {"k": 3}, "resources": {"batch_size": 2, "shard_images": 2}})
    run_stages(spec, tmp_path / "out")
    (rec,) = read_unit_records(tmp_path / "out" / "records" / "pool.jsonl")
    assert [t.index for t in rec.top_images] == [0, 1, 2]
    assert [t.value for t in rec.top_images] == pytest.approx([250 / 255, 250 / 255, 100 / 255])
    assert rec.explanations == [] and rec.schema_version == 4
