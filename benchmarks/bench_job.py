"""A whole NetDissect job through Ray against a bare decode + forward loop, in one run.

On a generated Broden-format dataset (``ray-dissect make-dataset``: 224-px photos, 112-px
masks) and torchvision ResNet18 ``layer4`` (random init), this measures side by side:

- (a) bare loop: one process, decode (``read_image``) + preprocess + forward over the same
  images, the same batch size and as many torch threads as the job's actors use together
  (``actors x threads_per_actor``), no writes;
- (b) the whole job: ``python -m ray_dissect run SPEC --out FRESH_DIR --no-report`` in a
  subprocess, timed from launch to exit (interpreter start-up, imports and Ray start-up
  included).

It prints the ratio job / bare (target <= 1.2), the ratio against NetDissect-Lite's 127 s
measured on this machine kind for 2,000 images (target <= 0.75; scaled by images / 2,000
for ``--images`` other than 2,000, only indicative then), the per-stage seconds and the
start-up breakdown from the job's manifest (what ``ray-dissect status`` shows).

Usage: python benchmarks/bench_job.py [--images 2000] [--data DIR] [--batch 32]
       [--actors 2] [--order bare,job,other] [--compare-with TREE] [--repeat N]

``--repeat N`` runs N rounds of the measurements (each round in ``--order``) and reports each
measurement's best round, as ``timeit`` does: the machine's other load only ever adds time,
and on this 2-core machine it moves the bare loop by 20% between runs. Every round's times
and ratio are printed too.

``--compare-with TREE`` runs the same job a second time with the package of another
checkout (e.g. ``/work/main``, before this tree's start-up changes), in the same run;
``--order`` says in which order the three measurements run (the machine's load drifts);
with it the per-stage seconds of both runs and their ratios are printed (e.g. the scoring
stage against the tree before the fast-scoring rewrite, ``git worktree add --detach DIR
04c1334^``, which is the issue's "today").

``--data DIR`` keeps the generated dataset there (made once, reused when it already holds
``--images`` images); without it the dataset goes in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NDL_SECONDS_2000 = 127.0
LAYER = "layer4"


def make_dataset(root: Path, images: int) -> Path:
    """The generated dataset at ``root`` (made with ``ray-dissect make-dataset`` if absent)."""
    index = root / "index.csv"
    if index.exists() and sum(1 for _ in index.open()) - 1 == images:
        return root
    subprocess.run([sys.executable, "-m", "ray_dissect", "make-dataset", str(root),
                    "--images", str(images), "--image-size", "224", "--mask-size", "112"],
                   check=True, stdout=subprocess.DEVNULL)
    return root


def job_spec(data: Path, images: int, batch: int, actors: int) -> dict[str, Any]:
    """The NetDissect job: ResNet18 ``layer4``, random init, on the generated dataset; 256
    images per shard (the default: 8 shards for 2,000 images), or a quarter of a small set."""
    shard = 256 if images >= 1024 else max(batch, images // 4 // batch * batch)
    return {"name": "bench_job", "model": {"name": "resnet18", "weights": "none"},
            "layers": [LAYER], "dataset": {"root": str(data)},
            "method": {"kind": "netdissect"},
            "resources": {"actors": actors, "batch_size": batch, "shard_images": shard}}


def bare_loop(spec_dict: dict[str, Any], threads: int) -> float:
    """Seconds of decode + preprocess + forward over every image, in this process."""
    import torch

    from ray_dissect.datasets.registry import open_dataset
    from ray_dissect.models.extract import Extractor
    from ray_dissect.spec import parse_spec

    spec = parse_spec(spec_dict)
    dataset = open_dataset(spec.dataset)
    extractor = Extractor(spec.model, spec.layers, threads=threads)
    batch = spec.resources.batch_size
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for b0 in range(0, len(dataset), batch):
        extractor([dataset.read_image(i) for i in range(b0, min(b0 + batch, len(dataset)))])
    return time.perf_counter() - start


def whole_job(spec_dict: dict[str, Any], out: Path, tree: Path | None = None) -> float:
    """Wall seconds of ``ray-dissect run`` into the fresh directory ``out`` (with the package
    of the checkout ``tree`` instead of this one's when given)."""
    spec_path = out.with_suffix(".json")
    spec_path.write_text(json.dumps(spec_dict))  # YAML is a superset of JSON
    env = dict(os.environ, RAY_DISSECT_NO_COLOR="1")
    if tree is not None:  # run from the tree: ``-m`` puts the working directory first
        env["PYTHONPATH"] = str(tree.resolve())
    cwd = tree.resolve() if tree is not None else None
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ray_dissect", "run", str(spec_path.resolve()),
                    "--out", str(out.resolve()), *no_report(env, cwd)], check=True, env=env,
                   stdout=subprocess.DEVNULL, cwd=cwd)
    return time.perf_counter() - start


def no_report(env: dict[str, str], cwd: Path | None) -> list[str]:
    """``["--no-report"]``, or nothing for a tree from before the report (which builds none)."""
    shown = subprocess.run([sys.executable, "-m", "ray_dissect", "run", "--help"], env=env,
                           cwd=cwd, capture_output=True, text=True).stdout
    return ["--no-report"] if "--no-report" in shown else []


def print_breakdown(out: Path) -> None:
    """Per-stage seconds and the run's start-up timings, from the job's manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    run = manifest["runs"][-1]
    for name, st in manifest["stages"].items():
        if st["total"] or st["seconds"]:
            extra = "  ".join(f"{k} {v:.1f}" for k, v in (st.get("breakdown") or {}).items())
            print(f"  stage {name:<12} {st['seconds']:7.2f} s  {extra}")
    for key, seconds in (run.get("timings") or {}).items():
        print(f"  start-up {key:<28} {seconds:7.2f} s")


def stage_seconds(out: Path) -> dict[str, float]:
    """Each stage's seconds in the job's manifest (stages that ran)."""
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: st["seconds"] for name, st in stages.items() if st["seconds"]}


def print_stage_ratios(out: Path, other: Path) -> None:
    """Per stage: this tree's seconds, the other tree's, and other / this (the speed-up)."""
    mine, theirs = stage_seconds(out), stage_seconds(other)
    for name in [n for n in mine if n in theirs]:
        print(f"  stage {name:<12} this {mine[name]:7.2f} s  that {theirs[name]:7.2f} s  "
              f"that / this {theirs[name] / mine[name]:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--order", default="bare,job,other",
                        help="the order of the measurements, comma-separated")
    parser.add_argument("--compare-with", type=Path, default=None, metavar="TREE",
                        help="also run the job with another checkout's package (e.g. main)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the measurements (in --order each round); the "
                        "figures below are each measurement's best round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(args.data or Path(tmp) / "ds", args.images)
        spec_dict = job_spec(data, args.images, args.batch, args.actors)
        order = [name for name in args.order.split(",")
                 if name != "other" or args.compare_with is not None]
        rounds = [run_round(spec_dict, Path(tmp) / f"round{r}", order, args)
                  for r in range(args.repeat)]
        seconds = {name: min(r[name] for r in rounds) for name in order}
        best = {name: Path(tmp) / f"round{min(range(len(rounds)), key=lambda i: rounds[i][name])}"
                for name in order}
        out, other = best.get("job", Path(tmp)) / "job", best.get("other", Path(tmp)) / "other"
        ndl = NDL_SECONDS_2000 * args.images / 2000
        print(f"images={args.images} batch={args.batch} actors={args.actors} "
              f"bare threads={args.actors} order={','.join(order)} rounds={args.repeat} "
              f"load after={os.getloadavg()[0]:.1f}")
        if args.repeat > 1:
            for r, row in enumerate(rounds):
                print(f"  round {r + 1}: " + "  ".join(f"{k} {v:.2f} s" for k, v in row.items())
                      + f"  job / bare {row['job'] / row['bare']:.3f}")
        print(f"(a) bare decode + forward loop : {seconds['bare']:8.2f} s")
        print(f"(b) whole job via ray-dissect  : {seconds['job']:8.2f} s")
        print(f"ratio job / bare               : {seconds['job'] / seconds['bare']:8.3f}  "
              "(target <= 1.2)")
        print(f"ratio job / NetDissect-Lite    : {seconds['job'] / ndl:8.3f}  (target <= 0.75;"
              f" NDL {ndl:.1f} s = 127 s x images/2000)")
        if "other" in seconds:
            print(f"(c) whole job, {args.compare_with}: {seconds['other']:8.2f} s  "
                  f"(this tree / that: {seconds['job'] / seconds['other']:.3f})")
            print_stage_ratios(out, other)
        print_breakdown(out)


def run_round(spec_dict: dict[str, Any], base: Path, order: list[str],
              args: argparse.Namespace) -> dict[str, float]:
    """One round: each measurement in ``order``, the jobs into fresh directories in ``base``."""
    base.mkdir()
    steps = {"bare": lambda: bare_loop(spec_dict, args.actors),
             "job": lambda: whole_job(spec_dict, base / "job"),
             "other": lambda: whole_job(spec_dict, base / "other", args.compare_with)}
    return {name: steps[name]() for name in order}


if __name__ == "__main__":
    main()
