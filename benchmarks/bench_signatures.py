"""A clustered scoring task's memory, scored in passes of units (the budget) or in one pass.

On a finished job directory (e.g. ``bench_scale.py --sizes 63305 --workdir W`` leaves
``W/out_broden_64_32_63305``), this takes one block of units of a layer, finds their quantile
threshold and ``--clusters`` k-means ranges exactly as the thresholds stage does (once, in this
process), then scores the block as a clustered job's task does (``scoring_work``: the masks of
every range, the tally and a length-1 search per range) in a fresh process per budget:
the default ``resources.signature_mb`` (passes of units whose signatures fit it by the
bound) and unlimited (one pass, the code before passes). Each child prints its
peak RSS above what it held before scoring (index and job loaded), its CPU seconds, its passes
and the bound; the parent checks that both gave the same records' numbers.

Usage: python benchmarks/bench_signatures.py --job DIR --layer L [--units 128] [--clusters 5]
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ray_dissect.concepts.index import load_index
from ray_dissect.datasets.registry import open_dataset
from ray_dissect.explain.ranges import range_specs
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.stages import scoring
from ray_dissect.pipeline.stages.thresholds import threshold_work
from ray_dissect.spec import ClusteredMethod, ResourceSpec, parse_spec

UNLIMITED = 2**62


def _load(job_dir: Path) -> tuple[JobDir, object, object]:
    job = JobDir(job_dir)
    spec = parse_spec(json.loads(Path(job.root / "spec.json").read_text()))
    index = load_index(job.concept_index, open_dataset(spec.dataset).vocab)
    return job, spec, index


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """Score the block with ``--budget`` bytes and print what it cost, as JSON."""
    job, spec, index = _load(args.job)
    with open(args.ranges, "rb") as f:
        thresholds, ranges = pickle.load(f)
    units = (0, len(thresholds))
    method = ClusteredMethod(clusters=args.clusters, length=1)
    specs = range_specs(thresholds, ranges, scoring.inclusive_bounds(method))
    shard = spec.resources.shard_images  # type: ignore[attr-defined]
    passes = scoring.signature_passes(job, args.layer, units, specs, index, shard, args.budget)
    bound = scoring.signature_bounds(job, args.layer, units, specs, index, shard)
    base, t = _rss_mb(), time.process_time()
    result = scoring.scoring_work(job, args.layer, units, thresholds, ranges, index, None,
                                  method, shard, args.budget)
    seconds = time.process_time() - t
    bound_mb = float(bound.sum()) * scoring.ENTRY_BYTES / 2**20
    print(json.dumps({"peak_mb": _rss_mb() - base, "base_mb": base, "seconds": seconds,
                      "passes": len(passes), "bound_mb": bound_mb,
                      "area": result.tally.area.tolist(),
                      "inter": float(result.tally.inter.sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--layer", required=True)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--budget", type=int, help=argparse.SUPPRESS)  # child
    parser.add_argument("--ranges", type=Path, help=argparse.SUPPRESS)  # child
    args = parser.parse_args()
    if args.budget is not None:
        child(args)
        return
    job, _spec, index = _load(args.job)
    thresholds, _nonfinite, ranges = threshold_work(
        job, args.layer, (0, args.units), 0.005, index.valid, args.clusters)  # type: ignore[attr-defined]
    print(f"images={index.n_images} label_sets={index.n_sets} "  # type: ignore[attr-defined]
          f"histogram_entries={len(index.image_sets)} units={args.units} "  # type: ignore[attr-defined]
          f"ranges per unit={1 + args.clusters}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ranges.pkl"
        path.write_bytes(pickle.dumps((thresholds, ranges)))
        default = int(ResourceSpec().signature_mb * 2**20)
        for name, budget in (("passes", default), ("one pass", UNLIMITED)):
            out = subprocess.run([sys.executable, __file__, "--job", str(args.job), "--layer",
                                  args.layer, "--clusters", str(args.clusters), "--budget",
                                  str(budget), "--ranges", str(path)],
                                 check=True, capture_output=True, text=True).stdout
            rows[name] = json.loads(out.strip().splitlines()[-1])
            r = rows[name]
            print(f"{name:9s}: {r['passes']:3d} passes, peak +{r['peak_mb']:8.1f} MB over "
                  f"{r['base_mb']:.0f} MB, {r['seconds']:7.1f} s CPU "
                  f"(bound {r['bound_mb']:.0f} MB of signatures for the block)")
    split, whole = rows["passes"], rows["one pass"]
    same = split["area"] == whole["area"] and split["inter"] == whole["inter"]
    print(f"peak ratio one pass / passes: {whole['peak_mb'] / max(split['peak_mb'], 1e-9):.2f}x; "
          f"time ratio passes / one pass: {split['seconds'] / whole['seconds']:.2f}x; "
          f"same tallies: {same}")
    assert same and np.isfinite(rows["passes"]["seconds"])


if __name__ == "__main__":
    main()
