"""Extraction pipeline against a device-resident forward loop, on one GPU (or the CPU), no Ray.

Everything runs in this process with the Ray-free code the model actors run
(:class:`ray_dissect.pipeline.shard_pipeline.ShardPipeline`, two shards in flight as on an
actor), on a random-init ResNet18 (``weights: none``, nothing downloaded) and generated
JPEGs, all measured side by side in this one run:

- *resident*: the ceiling. Every batch decoded and normalised beforehand and already on the
  device; the loop only runs the forward with the layer hooks (timed after a warm-up).
- *serial*: ``serial_extraction_work`` per shard (decode, forward, copy back and write, one
  step after the other): the path the pipeline replaces, and its bitwise reference.
- *pipeline*: ``extraction_work`` per shard for each ``--decode-threads`` value, writing the
  same Zarr store; its bytes are compared with the serial store's.

Printed: images/s of each, the ratio pipeline / resident (target on a GPU: >= 0.8), the device
busy fraction (forward seconds / wall; CUDA-event time on a GPU), the per-stage breakdown
(decode summed over threads, forward, copy, write, wait) and whether the stores are
bit-identical; ``--json`` also writes them. Without CUDA it says so and measures the CPU path
with smaller defaults (the figures are then not the GPU target's).

Usage: python benchmarks/bench_gpu.py [--images N] [--batch 64] [--layers layer4]
       [--decode-threads 4 8] [--size 224] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.context import JobContext, WorkEnv
from ray_dissect.pipeline.prepare import preflight, prepare_job_dir
from ray_dissect.pipeline.run import run_in_flight
from ray_dissect.pipeline.shard_pipeline import STEPS, ShardResult
from ray_dissect.pipeline.stages import activations
from ray_dissect.records.schema import Provenance
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import location

CUDA = torch.cuda.is_available()


def job_spec(root: Path, args: argparse.Namespace, decode_threads: int = 1) -> JobSpec:
    """ResNet18, random init, the chosen layers; one shard = 8 batches."""
    return parse_spec({
        "model": {"name": "resnet18", "preprocess": {"size": args.size}},
        "layers": args.layers, "dataset": {"root": str(root)},
        "resources": {"batch_size": args.batch, "shard_images": 8 * args.batch,
                      "threads_per_actor": args.threads, "decode_threads": decode_threads,
                      "gpus_per_actor": 1 if CUDA else 0}})


def build(env: WorkEnv) -> WorkEnv:
    """Build the replica's model (the same random weights every time: ``model.init_seed``)."""
    env.extractor  # noqa: B018 (built on first use)
    return env


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def resident_loop(env: WorkEnv, batch: int) -> float:
    """Images/s of the forward alone on batches already decoded and on the device."""
    n = len(env.dataset)
    spec = env.spec.model.preprocess
    images = [env.dataset.read_image(i) for i in range(n)]
    batches = [torch.from_numpy(preprocess(images[b:b + batch], spec)).to(env.device)
               for b in range(0, n, batch)]
    for x in batches[:2]:  # warm-up (cuDNN, allocator)
        env.extractor.forward(x)
    sync()
    t0 = time.perf_counter()
    for x in batches:
        env.extractor.forward(x)
    sync()
    return n / (time.perf_counter() - t0)


def extract(spec: JobSpec, out: Path, work: Callable[..., ShardResult], inflight: int
            ) -> tuple[float, dict[str, float]]:
    """Run ``work`` over every shard into a new store ``out``; images/s and summed breakdown
    (model built and warmed up before the clock starts)."""
    spec, dataset, shapes = preflight(spec)
    job, _ = prepare_job_dir(spec, location(out))
    provenance = Provenance(job=spec.name, spec_hash=spec.spec_hash(), package_version="bench")
    plan = activations.plan(JobContext(spec, job, dataset, shapes, provenance))
    env = build(WorkEnv(spec, job, "cuda" if CUDA else "cpu"))
    size = spec.model.preprocess.size
    env.extractor.forward(torch.zeros(spec.resources.batch_size, 3, size, size,
                                      device=env.device))
    if work is activations.extraction_work:
        env.shard_pipeline()
    sync()
    total = dict.fromkeys(STEPS, 0.0)

    def done(_i: int, result: ShardResult) -> None:
        for step, seconds in result.breakdown.items():
            total[step] += seconds

    t0 = time.perf_counter()
    run_in_flight(lambda call: work(env, *call), plan.calls, inflight, done)
    wall = time.perf_counter() - t0
    env.close()
    return len(dataset) / wall, {**total, "wall": wall}


def store_bytes(out: Path) -> dict[str, bytes]:
    store = out / "activations.zarr"
    return {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def breakdown_text(b: dict[str, float]) -> str:
    return "  ".join(f"{step} {b[step]:.2f}s" for step in STEPS) + f"  (wall {b['wall']:.2f}s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096 if CUDA else 256)
    parser.add_argument("--batch", type=int, default=64 if CUDA else 32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", nargs="+", default=["layer4"])
    parser.add_argument("--threads", type=int, default=1 if CUDA else torch.get_num_threads(),
                        help="torch intra-op threads of the model replica")
    parser.add_argument("--decode-threads", type=int, nargs="+", default=[4, 8] if CUDA else [1, 2])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if CUDA else "no GPU found: measuring the CPU path"
    print(f"device: {device}; torch {torch.__version__}; images={args.images} batch={args.batch} "
          f"size={args.size} layers={args.layers} torch_threads={args.threads}")
    report: dict[str, Any] = {"device": device, "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = generate_dataset(Path(tmp) / "ds", args.images, seed=0, image_size=args.size,
                                mask_size=max(1, args.size // 2))
        print(f"generated {args.images} JPEGs in {time.perf_counter() - t0:.1f}s")
        spec = job_spec(root, args)
        env = build(WorkEnv(spec, prepare_job_dir(spec, location(Path(tmp) / "res"))[0],
                            "cuda" if CUDA else "cpu"))
        resident = resident_loop(env, args.batch)
        del env
        print(f"resident forward loop : {resident:9.1f} images/s (the ceiling)")
        serial, sb = extract(spec, Path(tmp) / "serial", activations.serial_extraction_work, 1)
        reference = store_bytes(Path(tmp) / "serial")
        print(f"serial extraction     : {serial:9.1f} images/s  ratio {serial / resident:.3f}  "
              f"{breakdown_text(sb)}")
        report |= {"resident_img_s": resident, "serial_img_s": serial, "serial": sb,
                   "pipeline": []}
        for threads in args.decode_threads:
            out = Path(tmp) / f"piped{threads}"
            rate, b = extract(job_spec(root, args, threads), out, activations.extraction_work, 2)
            same = store_bytes(out) == reference
            busy = b["forward"] / b["wall"]
            print(f"pipeline, {threads:2d} decode threads: {rate:9.1f} images/s  "
                  f"ratio {rate / resident:.3f} (target >= 0.8 on a GPU)  device busy "
                  f"{busy:.2f}  bit-identical to serial: {same}")
            print(f"    breakdown: {breakdown_text(b)}")
            report["pipeline"].append({"decode_threads": threads, "img_s": rate,
                                       "ratio": rate / resident, "busy": busy,
                                       "identical": same, "breakdown": b})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not CUDA:
        print("no GPU: these are CPU figures; the GPU targets need a GPU machine")


if __name__ == "__main__":
    main()
