"""The GPU check: whole jobs in-process on the device, each figure a ratio measured in this run.

Runs the package without Ray (the in-process runner, ``pipeline/run.py``'s ``execute_on``) on
a generated dataset and a random-init ResNet18 (``layer4``, nothing downloaded):

1. *resident loop*: batches decoded beforehand and already on the device, forward with the
   layer hook only (the ceiling, ``bench_gpu.resident_loop``);
2. a whole NetDissect job and a clustered K job on the device: extraction images/s against
   the resident loop (target >= 0.8), device busy fraction (forward / extraction wall,
   target >= 0.9), the whole job's wall against the resident loop's;
3. the same jobs' scoring stage redone on the CPU (numba kernels) over the same activations:
   its seconds against the device scoring's (target >= 10x on 16 cores), and the records of
   both byte for byte (must be identical: the check fails otherwise).

``--cpu`` runs everything on the CPU (scoring then takes the numba path in both runs; for
trying the script anywhere). Without ``--cpu`` and without CUDA it stops at once. A JSON
summary goes to ``--json``.

Usage: python benchmarks/gpu_check.py [--cpu] [--images 2000] [--batch 64] [--clusters 5]
       [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_gpu import resident_loop

from ray_dissect.concepts.kernels import kernel_name
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.job.manifest import read_manifest
from ray_dissect.pipeline.context import WorkEnv
from ray_dissect.pipeline.prepare import prepare_job_dir
from ray_dissect.pipeline.run import execute_on, run_stages
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.storage import location


def job_spec(root: Path, name: str, batch: int, method: dict[str, Any]) -> JobSpec:
    """ResNet18 (random init) ``layer4`` on the generated dataset; the same spec for the
    device and the CPU run (the device comes from the executor, not the spec)."""
    return parse_spec({"name": name, "model": {"name": "resnet18", "preprocess": {"size": 224}},
                       "layers": ["layer4"], "dataset": {"root": str(root)}, "method": method,
                       "resources": {"batch_size": batch, "shard_images": 4 * batch,
                                     "gpus_per_actor": 0}})


def stage_figures(job: Path) -> dict[str, Any]:
    """Per stage: seconds and breakdown, from the job's manifest."""
    manifest = read_manifest(location(job))
    assert manifest is not None
    return {name: {"seconds": st.seconds, "breakdown": st.breakdown or {}}
            for name, st in manifest.stages.items()}


def records(job: Path) -> dict[str, bytes]:
    return {str(p.relative_to(job)): p.read_bytes() for p in sorted((job / "parts").rglob("*"))
            if p.is_file()}


def run_job(spec: JobSpec, out: Path, device: str) -> float:
    t0 = time.perf_counter()
    run_stages(spec, out, execute_on(device))
    return time.perf_counter() - t0


def check_job(spec: JobSpec, work: Path, device: str, resident: float, images: int
              ) -> dict[str, Any]:
    """One job on ``device``, then its scoring redone on the CPU; printed and returned."""
    on_dev, on_cpu = work / f"{spec.name}-device", work / f"{spec.name}-cpu"
    wall = run_job(spec, on_dev, device)
    shutil.copytree(on_dev, on_cpu)
    shutil.rmtree(on_cpu / "parts")
    run_job(spec, on_cpu, "cpu")
    dev, cpu = stage_figures(on_dev), stage_figures(on_cpu)
    act = dev["activations"]
    rate = images / act["seconds"]
    busy = act["breakdown"].get("forward", 0.0) / act["seconds"]
    same = records(on_dev) == records(on_cpu) and bool(records(on_dev))
    out = {"job_wall_s": wall, "extraction_img_s": rate, "extraction_vs_resident": rate / resident,
           "busy": busy, "scoring_device_s": dev["scoring"]["seconds"],
           "scoring_cpu_s": cpu["scoring"]["seconds"], "records_identical": same,
           "job_vs_resident_loop": wall / (images / resident),
           "stages_device": dev, "stages_cpu": cpu}
    print(f"[{spec.name}] whole job {wall:.1f} s = {out['job_vs_resident_loop']:.1f}x the "
          f"resident loop's {images / resident:.1f} s")
    print(f"[{spec.name}] extraction {rate:.1f} images/s = {rate / resident:.3f}x resident "
          f"(target >= 0.8), device busy {busy:.2f} (target >= 0.9)")
    masks = (cpu["scoring"]["breakdown"].get(f"masks_{kernel_name()}", 0.0),
             sum(v for k, v in dev["scoring"]["breakdown"].items() if k.startswith("masks")))
    out["masks_cpu_vs_device"] = masks[0] / max(masks[1], 1e-9)
    print(f"[{spec.name}] unit masks: CPU {masks[0]:.2f} s / {device} {masks[1]:.2f} s = "
          f"{out['masks_cpu_vs_device']:.1f}x (one CPU core: the in-process runner scores "
          f"one block at a time)")
    print(f"[{spec.name}] scoring: {device} {out['scoring_device_s']:.2f} s "
          f"{dev['scoring']['breakdown']}, CPU ({kernel_name()}) {out['scoring_cpu_s']:.2f} s "
          f"{cpu['scoring']['breakdown']}: {out['scoring_cpu_s'] / out['scoring_device_s']:.1f}x"
          f" (target >= 10x on a GPU)")
    print(f"[{spec.name}] records identical to the CPU scoring of the same activations: {same}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run everything on the CPU")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (use --cpu to run on the CPU)")
        return 2
    device = "cpu" if args.cpu else "cuda"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (--cpu)"
    print(f"device {name}; torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
          f"CPU kernels: {kernel_name()}; images={args.images} batch={args.batch}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        root = generate_dataset(work / "ds", args.images, seed=0, image_size=224, mask_size=112)
        print(f"generated {args.images} images in {time.perf_counter() - t0:.1f} s")
        methods = {"netdissect": {"kind": "netdissect"},
                   f"clustered{args.clusters}": {"kind": "clustered", "clusters": args.clusters,
                                                 "dedup": "string"}}  # no pyeda there
        specs = [job_spec(root, n, args.batch, m) for n, m in methods.items()]
        env = WorkEnv(specs[0], prepare_job_dir(specs[0], location(work / "res"))[0], device)
        resident = resident_loop(env, args.batch)
        env.close()
        print(f"resident forward loop: {resident:.1f} images/s (the ceiling)")
        report = {"device": name, "torch": torch.__version__, "resident_img_s": resident,
                  "jobs": {s.name: check_job(s, work, device, resident, args.images)
                           for s in specs}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = [n for n, j in report["jobs"].items() if not j["records_identical"]]
    if failed:
        print(f"gpu_check: FAILED, records differ between device and CPU scoring: {failed}")
        return 1
    print("gpu_check: records identical in every job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
