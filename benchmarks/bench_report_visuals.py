"""What the visualisation views add to a report build: the same job's report built with its
``receptive_fields.zarr`` / ``attribution.zarr`` / ``prism.zarr`` and from a copy without them,
side by side in one run (a shared machine's load moves wall times; the ratio is the figure).

The job: the tests' seeded tiny classifier (8 units at layer ``features``) over 32 generated
images at ``--size`` px, with every attribution method on all 32 images, receptive fields of
all 8 units (3 top images, occluder 11, stride 8) and PRISM (GE, inclusive quantisation,
split RGB, 3 clusters); run in-process (no Ray). The report then draws 8 RF maps and
thumbnails, 32 x 9 attribution pictures and 32 x 6 PRISM pictures.
Usage: python benchmarks/bench_report_visuals.py [--size 112] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.table import build_report
from ray_dissect.results import open_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[1] / "tests" / "fixtures" / "planted.py")
METHODS = ["saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam", "feature_maps",
           "weights"]


def _images(root: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((size, size), Image.Resampling.BILINEAR).save(root / f"c{i % 2}/{i}.png")
    return root


def _job(base: Path, size: int) -> Path:
    root = _images(base / "images", 32, size)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_classifier", "preprocess": {"size": size}},
        "layers": ["features"], "dataset": {"format": "images", "root": str(root)},
        "method": {"kind": "none"}, "top_images": {"k": 3},
        "analyses": {"attribution": {"methods": METHODS, "layer": "features"},
                     "receptive_fields": {"layers": ["features"], "top_k": 3, "occluder": 11,
                                          "stride": 8},
                     "prism": {"layer": "features", "ge_layers": ["features.1"],
                               "quantize": "inclusive", "split_rgb": True, "clusters": 3}},
        "resources": {"batch_size": 8, "shard_images": 16}})
    run_stages(spec, base / "job")
    return base / "job"


def _time(job: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build_report(open_job(job), out)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        job = _job(base, args.size)
        plain = base / "plain"
        shutil.copytree(job, plain, ignore=shutil.ignore_patterns(
            "receptive_fields.zarr", "attribution.zarr", "prism.zarr", "report"))
        with_v, without = [], []
        for _ in range(args.repeat):  # interleaved, so both see the same load
            with_v.append(_time(job, base / "r_visual"))
            without.append(_time(plain, base / "r_plain"))
        files = sum(1 for p in (base / "r_visual").rglob("*.png"))
        size = sum(p.stat().st_size for p in (base / "r_visual").rglob("*.png"))
        a, b = min(with_v), min(without)
        print(f"input {args.size} px, 32 images, 8 units; best of {args.repeat}")
        print(f"report with the visual views: {a:.2f} s ({files} PNGs, {size / 1e6:.1f} MB)")
        print(f"report without them:          {b:.2f} s")
        print(f"ratio: {a / b:.2f}x")


if __name__ == "__main__":
    main()
