"""Occlusion throughput of the receptive_fields work unit against a bare loop of the cut model.

Both are measured in this one run, on the same occluded batches (same images, windows, noise and
batch size), with the same torch threads, no Ray:

- bare loop: ``model.features[:k]`` (torchvision AlexNet cut after the probed layer as a plain
  ``nn.Sequential``, no hooks) on each occluded batch; only the forward calls are timed;
- pipeline: the stage's work function :func:`ray_dissect.pipeline.stages.receptive_fields.rf_work`
  in-process: image decoding, preprocessing, seeded noise, batches built on the device, the
  hook-truncated model, discrepancy at every unit's peak (all 256 units kept and painted, an
  upper bound), and the part written to disk.

Each is run ``--repeats`` times, alternately, and the best time of each is kept.

Cost model: a layer costs (distinct top images) x n_windows forwards of the cut model, with
n_windows = (1 + (S - o) // s) ** 2 (5,184 at 224 / 11 / 3), whatever the number of units.
The default stride is 8 (729 windows) to keep the run short; the forwards/s figure does not
depend on the stride.

Usage: python benchmarks/bench_occlusion.py [--images 2] [--size 224] [--occluder 11]
    [--stride 8] [--batch 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ray_dissect.job.layout import JobDir
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import WorkEnv
from ray_dissect.pipeline.stages.receptive_fields import occlusion_fill, occlusion_grid, rf_work
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import location
from ray_dissect.visualize.receptive_fields import occluded_batches

LAYER, CUT = "features.10", 11  # AlexNet's conv5 and the Sequential slice that ends with it


def _images(root: Path, n: int, size: int) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        small.resize((size, size), Image.Resampling.BILINEAR).save(root / f"{i:03d}.png")
    return root


def _clocks() -> np.ndarray:
    """(wall seconds, CPU seconds of this process): CPU time is robust to a shared machine."""
    return np.array([time.perf_counter(), time.process_time()])


def bare_loop(spec: JobSpec, env: WorkEnv, images: int) -> tuple[np.ndarray, int]:
    """(wall, CPU) seconds spent in forwards of the plain cut model over every occluded batch,
    and their number of copies."""
    rf = spec.analyses.receptive_fields
    assert rf is not None
    cut = env.model.features[:CUT]
    grid, fill = occlusion_grid(spec), occlusion_fill(spec)
    seconds, copies = np.zeros(2), 0
    with torch.inference_mode():
        for _ in range(2):  # warm-up (allocator, kernels), for both measurements
            cut(torch.zeros(spec.resources.batch_size, 3, grid.height, grid.width))
        for i in range(images):
            x = torch.from_numpy(preprocess([env.dataset.read_image(i)],
                                            spec.model.preprocess)[0])
            for _, batch in occluded_batches(x, grid, batch_size=spec.resources.batch_size,
                                             seed=rf.seed, image_index=i, fill=fill):
                start = _clocks()
                cut(batch)
                seconds += _clocks() - start
                copies += len(batch)
    return seconds, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--occluder", type=int, default=11)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = _images(Path(tmp) / "images", args.images, args.size)
        spec = parse_spec({
            "model": {"name": "alexnet", "preprocess": {"size": args.size}}, "layers": [LAYER],
            "dataset": {"format": "images", "root": str(root)}, "method": {"kind": "none"},
            "analyses": {"receptive_fields": {"layers": [LAYER], "occluder": args.occluder,
                                              "stride": args.stride}},
            "resources": {"batch_size": args.batch, "shard_images": args.batch,
                          "threads_per_actor": threads}})
        env = WorkEnv(spec, JobDir(location(Path(tmp) / "out")))
        units = int(env.model.features[:CUT](torch.zeros(1, 3, args.size, args.size)).shape[1])
        bare_s, piped_s = np.full(2, np.inf), np.full(2, np.inf)
        for _ in range(args.repeats):  # alternated, best of each (the machine may be shared)
            seconds, copies = bare_loop(spec, env, args.images)
            bare_s = np.minimum(bare_s, seconds)
            start = _clocks()
            rf_work(env, LAYER, 0, list(range(args.images)), [list(range(units))] * args.images)
            piped_s = np.minimum(piped_s, _clocks() - start)
    windows = occlusion_grid(spec).n_windows
    bare, piped = copies / bare_s, args.images * windows / piped_s
    full = (1 + (args.size - 11) // 3) ** 2
    print(f"AlexNet cut at {LAYER} ({units} units), {args.size} px, occluder {args.occluder}, "
          f"stride {args.stride}: {windows} windows/image, {args.images} images, batch "
          f"{args.batch}, torch threads {threads}, best of {args.repeats}")
    print("                             wall clock   per CPU second")
    print(f"bare loop of the cut model : {bare[0]:8.1f}     {bare[1]:8.1f}   occluded forwards/s")
    print(f"pipeline work unit         : {piped[0]:8.1f}     {piped[1]:8.1f}   occluded "
          "forwards/s (everything included)")
    print(f"ratio pipeline / bare      : {piped[0] / bare[0]:8.3f}     {piped[1] / bare[1]:8.3f}")
    print(f"cost model: distinct top images x windows forwards; at {args.size} / 11 / 3 ({full} "
          f"windows) {full / piped[0]:.0f} s per image here, so a whole layer of U units with "
          f"top_k 10 (<= 10 U distinct images) costs <= 10 U x {full / piped[0]:.0f} s / workers")


if __name__ == "__main__":
    main()
