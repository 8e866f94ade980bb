"""Scaling with the number of images: time per image, peak RSS per process, time exponent.

For each size (default 2,000, 8,000 and 32,000 images) a dataset is generated (64-px images,
32-px masks) and a whole job runs on a fresh local Ray session: EfficientNet-Lite0 at 64 px
(layers ``_blocks.15`` and ``_bn1``), NetDissect, 2 actors. Reported per size: seconds per image
per stage and in total, the driver's peak RSS, and the largest peak RSS (VmHWM) among the Ray
worker processes. The exponent b of time ~ images^b is fitted over the sizes (b = 1 is linear).

Usage: python benchmarks/bench_scale.py [--sizes 2000 8000 32000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ray_dissect.generate import generate_dataset
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


def run_size(n: int, workdir: Path) -> dict[str, float]:
    import ray

    root = workdir / f"ds{n}"
    if not (root / "index.csv").exists():
        generate_dataset(root, n, seed=0, image_size=64, mask_size=32)
    spec = parse_spec({
        "model": {"factory": "ray_dissect.zoo:efficientnet_lite0", "preprocess": {"size": 64}},
        "layers": ["_blocks.15", "_bn1"], "dataset": {"root": str(root)},
        "resources": {"actors": 2, "batch_size": 64, "shard_images": 512,
                      "units_per_task": 400}})
    out = workdir / f"out{n}"
    shutil.rmtree(out, ignore_errors=True)
    ray.init(num_cpus=2, include_dashboard=False)
    start = time.perf_counter()
    summary = run_job(spec, out)
    total = time.perf_counter() - start
    workers = worker_peak_rss_mb()
    ray.shutdown()
    row = {f"{k}_ms_per_image": 1000 * v / n for k, v in summary.stage_seconds.items()}
    row |= {"total_s": total, "ms_per_image": 1000 * total / n, "worker_peak_mb": workers,
            "driver_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "store_mb": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    rows = {}
    for n in args.sizes:
        rows[n] = run_size(n, workdir)
        r = rows[n]
        print(f"images={n:6d} total={r['total_s']:7.1f}s {r['ms_per_image']:6.2f} ms/image "
              f"(concepts {r['concepts_ms_per_image']:.2f}, activations "
              f"{r['activations_ms_per_image']:.2f}, thresholds {r['thresholds_ms_per_image']:.2f}"
              f", scoring {r['scoring_ms_per_image']:.2f}) driver peak {r['driver_peak_mb']:.0f}"
              f" MB, worker peak {r['worker_peak_mb']:.0f} MB, job dir {r['store_mb']:.0f} MB",
              flush=True)
    if len(rows) > 1:
        sizes = np.array(sorted(rows), dtype=float)
        times = np.array([rows[int(n)]["total_s"] for n in sizes])
        slope = np.polyfit(np.log(sizes), np.log(times), 1)[0]
        print(f"time ~ images^{slope:.3f} over {', '.join(str(int(n)) for n in sizes)} images")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
