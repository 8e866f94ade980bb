"""Extraction throughput of the pipeline against a bare forward loop, and scoring cost per unit.

Both are measured in this one run, on the demo model (EfficientNet-Lite0) and a generated
dataset, with the same batch size:

- bare loop: one process, torch's default threads, decode + preprocess + forward, no writes;
- pipeline: ``run_job`` with the given number of model actors (``threads_per_actor`` each,
  ``decode_threads`` decode threads each, two shards in flight per actor), writing every
  layer's activations to Zarr; its activations stage time includes starting the actors and
  loading the model. The stage's time breakdown (decode, forward, copy, write, wait seconds
  summed over shards, from the manifest, as ``ray-dissect status`` shows it) is printed too.

Usage: python benchmarks/bench_extraction.py [--images 512] [--actors 2] [--batch 32]
       [--decode-threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.models.extract import Extractor
from ray_dissect.runtime.driver import run_job
from ray_dissect.spec import parse_spec

LAYERS = ["_blocks.10", "_bn1"]


def bare_loop(spec_dict: dict, batch: int) -> float:
    """Images per second of decode + preprocess + forward in this process."""
    spec = parse_spec(spec_dict)
    dataset = BrodenDataset(spec.dataset)
    extractor = Extractor(spec.model, spec.layers, threads=torch.get_num_threads())
    start = time.perf_counter()
    for b0 in range(0, len(dataset), batch):
        images = [dataset.read_image(i) for i in range(b0, min(b0 + batch, len(dataset)))]
        extractor(images)
    return len(dataset) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--decode-threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "ds", args.images, seed=0)
        spec_dict = {
            "model": {"factory": "ray_dissect.zoo:efficientnet_lite0"}, "layers": LAYERS,
            "dataset": {"root": str(root)},
            "resources": {"actors": args.actors, "batch_size": args.batch,
                          "shard_images": 4 * args.batch, "units_per_task": 320,
                          "decode_threads": args.decode_threads}}
        bare = bare_loop(spec_dict, args.batch)
        summary = run_job(parse_spec(spec_dict), Path(tmp) / "out")
        manifest = json.loads((Path(tmp) / "out" / "manifest.json").read_text())
    breakdown = manifest["stages"]["activations"]["breakdown"]
    seconds = summary.stage_seconds
    piped = args.images / seconds["activations"]
    units = sum(layer.units for layer in summary.layers)
    print(f"images={args.images} batch={args.batch} actors={args.actors} "
          f"torch_threads_bare={torch.get_num_threads()}")
    print(f"bare forward loop      : {bare:8.2f} images/s")
    print(f"pipeline extraction    : {piped:8.2f} images/s (actor start-up included)")
    print(f"ratio pipeline / bare  : {piped / bare:8.3f}  (target >= 0.95)")
    print("  breakdown (s, summed over shards): "
          + "  ".join(f"{step} {seconds:.1f}" for step, seconds in breakdown.items()))
    print(f"concept index          : {args.images / seconds['concepts']:8.2f} images/s")
    print(f"thresholds             : {1000 * seconds['thresholds'] / units:8.3f} ms/unit")
    print(f"scoring (masks + IoU)  : {1000 * seconds['scoring'] / units:8.3f} ms/unit "
          f"over {units} units x {args.images} images")


if __name__ == "__main__":
    main()
