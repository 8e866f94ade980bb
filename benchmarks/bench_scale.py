"""Scaling with the number of images: time per image, peak RSS per process, time exponent.

For each size (default 2,000, 8,000 and 32,000 images) a dataset is generated (64-px images,
32-px masks) and a whole job runs on a fresh local Ray session: EfficientNet-Lite0 at 64 px
(layers ``_blocks.15`` and ``_bn1``), NetDissect, 2 actors. Reported per size: seconds per image
per stage and in total, the driver's peak RSS, and the largest peak RSS (VmHWM) among the Ray
worker processes. The exponent b of time ~ images^b is fitted over the sizes (b = 1 is linear),
and the marginal cost (t2 - t1) / (n2 - n1) between consecutive sizes is printed (constant
when time is linear plus a fixed start-up).

Each size is generated, then run, in fresh processes: a peak RSS is a per-process high-water
mark, so a driver that ran a smaller size (or generated the data) first would report that.
The driver's RSS just before the job (Python, torch, Ray client) is printed as its base.

Usage: python benchmarks/bench_scale.py [--sizes 2000 8000 32000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec


def worker_peak_rss_mb() -> float:
    """Largest VmHWM (peak resident set) among live Ray worker processes, in MB."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if not cmd.startswith(b"ray::"):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            continue
    return peak / 1024


def rss_mb() -> float:
    """This process's current resident set, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_size(n: int, workdir: Path) -> dict[str, float]:
    """Run one size in this (fresh) process; the dataset must exist."""
    import ray

    root = workdir / f"ds{n}"
    spec = parse_spec({
        "model": {"factory": "ray_dissect.zoo:efficientnet_lite0", "preprocess": {"size": 64}},
        "layers": ["_blocks.15", "_bn1"], "dataset": {"root": str(root)},
        "resources": {"actors": 2, "batch_size": 64, "shard_images": 512,
                      "units_per_task": 400}})
    out = workdir / f"out{n}"
    shutil.rmtree(out, ignore_errors=True)
    ray.init(num_cpus=2, include_dashboard=False)
    base = rss_mb()
    start = time.perf_counter()
    summary = run_job(spec, out)
    total = time.perf_counter() - start
    workers = worker_peak_rss_mb()
    ray.shutdown()
    row = {f"{k}_ms_per_image": 1000 * v / n for k, v in summary.stage_seconds.items()}
    row |= {"total_s": total, "ms_per_image": 1000 * total / n, "worker_peak_mb": workers,
            "driver_base_mb": base,
            "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "store_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20}
    return row


def _child(*args: str) -> str:
    return subprocess.run([sys.executable, __file__, *args], check=True, text=True,
                          stdout=subprocess.PIPE).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)  # child: make data
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: run one size
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    if args.generate:
        generate_dataset(workdir / f"ds{args.generate}", args.generate, seed=0, image_size=64,
                         mask_size=32)
        return
    if args.one:
        print(json.dumps(run_size(args.one, workdir)))
        return
    rows = {}
    for n in args.sizes:
        if not (workdir / f"ds{n}" / "index.csv").exists():
            _child("--generate", str(n), "--workdir", str(workdir))
        rows[n] = json.loads(_child("--one", str(n), "--workdir", str(workdir)).splitlines()[-1])
        r = rows[n]
        print(f"images={n:6d} total={r['total_s']:7.1f}s {r['ms_per_image']:6.2f} ms/image "
              f"(concepts {r['concepts_ms_per_image']:.2f}, activations "
              f"{r['activations_ms_per_image']:.2f}, thresholds {r['thresholds_ms_per_image']:.2f}"
              f", scoring {r['scoring_ms_per_image']:.2f}) driver peak {r['driver_peak_mb']:.0f}"
              f" MB (base {r['driver_base_mb']:.0f}), worker peak {r['worker_peak_mb']:.0f} MB, "
              f"job dir {r['store_mb']:.0f} MB", flush=True)
    if len(rows) > 1:
        sizes = np.array(sorted(rows), dtype=float)
        times = np.array([rows[int(n)]["total_s"] for n in sizes])
        slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
        print(f"time ~ images^{slope:.3f} over {', '.join(str(int(n)) for n in sizes)} images")
        for i in range(len(sizes) - 1):
            marginal = 1000 * (times[i + 1] - times[i]) / (sizes[i + 1] - sizes[i])
            print(f"marginal {int(sizes[i])} -> {int(sizes[i + 1])}: {marginal:.2f} ms/image")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
