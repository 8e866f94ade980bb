"""Beam against optimal search per unit: time, nodes, proofs, and what the beam missed.

A generated Broden-format dataset (default 2,000 images, 224-px images, 112-px masks; the
``default`` vocabulary or the Broden-shaped ``broden`` one, 1,197 concepts) is indexed
in-process; ResNet18 (torchvision, random init with seed 0: no download) gives ``layer4``
maps, each unit is thresholded at its top-0.5 % quantile (feature resolution), and the masks
of the first ``--units`` units (and the K k-means ranges of the first ``--cluster-units``
units) are explained with length 3, beam 5:

- beam:    ``search.beam_search`` (the default ``search: beam``);
- optimal: ``optimal.optimal_search`` started from the beam's answer, ``--budget`` seconds.

Times are CPU seconds (``time.process_time``, one thread) per unit (range), after one
untimed search that loads the compiled (numba) kernels, a cost paid once per process (they
are cached on disk). Printed, with the load average at start and end: median
and p99 of both, their ratio, nodes expanded and exact IoUs visited by the optimal search,
the share proved optimal, the share of beam answers that were suboptimal and the IoU lost.

Usage: python benchmarks/bench_optimal.py [--vocabulary default|broden] [--images 2000]
       [--units 512] [--cluster-units 0] [--clusters 5] [--budget 60] [--root DIR]
       [--image-size 224] [--mask-size 112] [--prepared FILE]

``--prepared FILE`` keeps the space and the masks (index and maps take minutes) for reruns;
a file made with other options is read as it is, cut to the first ``--units`` units and
``--cluster-units`` x ``--clusters`` ranges when it holds more.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import build

from ray_dissect.concepts.jit import kernel_name
from ray_dissect.concepts.masks import unit_masks
from ray_dissect.explain.optimal import Budget, optimal_search
from ray_dissect.explain.search import SearchParams, SearchSpace, beam_search
from ray_dissect.units.ranges import kmeans_1d


def layer4(ds: object, n: int, batch: int = 50) -> np.ndarray:
    """(n, 512, h, w) float32 ResNet18 ``layer4`` maps, random init (seed 0)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    trunk = torch.nn.Sequential(*list(net.children())[:-2])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for s in range(0, n, batch):
            imgs = np.stack([ds.read_image(i) for i in range(s, min(s + batch, n))])  # type: ignore[attr-defined]
            x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
            out.append(trunk((x - mean) / std).numpy())
    return np.concatenate(out)


def masks_of(acts: np.ndarray, u: int, ids: np.ndarray, valid: np.ndarray, clusters: int
             ) -> list:
    """Unit u's quantile mask, or its k-means range masks."""
    a = acts[:, u:u + 1]
    if not clusters:
        lo = np.array([float(np.quantile(a, 0.995))])
        return unit_masks(a, lo, np.array([np.inf]), ids, 0, valid)
    values = a.ravel()
    return [unit_masks(a, np.array([lo]), np.array([hi]), ids, 0, valid, inclusive=True)[0]
            for lo, hi in kmeans_1d(values[values > 0], clusters, seed=0)]


def run(space: SearchSpace, masks: list, budget: float) -> dict[str, np.ndarray]:
    """Per mask: beam and optimal CPU seconds, expanded, visited, proved, IoUs."""
    params = SearchParams(length=3, beam=5)
    optimal_search(masks[0], space, params)  # loads the compiled kernels (once per process)
    rows = []
    for mask in masks:
        t = time.process_time()
        beam = beam_search(mask, space, params)
        tb = time.process_time() - t
        start = beam.beam[0] if beam.beam else None
        t = time.process_time()
        res = optimal_search(mask, space, params, start, Budget(seconds=budget))
        to = time.process_time() - t
        c = res.certificate
        rows.append((tb, to, c.expanded, c.visited, c.optimal, start.iou if start else 0.0,
                     res.best.iou if res.best else 0.0, c.upper_bound))
    names = ("beam_s", "optimal_s", "expanded", "visited", "proved", "beam_iou", "iou", "bound")
    return {k: np.array(v) for k, v in zip(names, zip(*rows, strict=True), strict=True)}


def report(r: dict[str, np.ndarray]) -> None:
    """Print the figures of the module docstring."""
    def q(x: np.ndarray) -> str:
        return f"median {np.median(x):.3f} s, p99 {np.quantile(x, 0.99):.3f} s, max {x.max():.3f} s"

    lost = np.maximum(r["iou"] - r["beam_iou"], 0)
    worse = lost > 1e-12
    print(f"beam   : {q(r['beam_s'])}")
    print(f"optimal: {q(r['optimal_s'])}; ratio of medians "
          f"{np.median(r['optimal_s']) / np.median(r['beam_s']):.1f}x")
    print(f"nodes expanded: median {np.median(r['expanded']):.0f}, max {r['expanded'].max()}; "
          f"exact IoUs visited: median {np.median(r['visited']):.0f}, max {r['visited'].max()}")
    print(f"proved optimal: {int(r['proved'].sum())}/{r['proved'].size} "
          f"({100 * r['proved'].mean():.1f} %); largest gap left "
          f"{(r['bound'] - r['iou']).max():.4f}")
    rel = lost[worse] / r["iou"][worse] if worse.any() else np.zeros(1)
    print(f"beam suboptimal: {int(worse.sum())}/{worse.size} ({100 * worse.mean():.1f} %); "
          f"IoU lost mean {lost.mean():.4f}, max {lost.max():.4f}, max relative "
          f"{100 * rel.max():.1f} %")


def prepare(args: argparse.Namespace) -> tuple[SearchSpace, list, list]:
    """The search space, the quantile masks of the first ``--units`` units and the k-means
    range masks of the first ``--cluster-units`` units (``--clusters`` ranges each); read
    from / written to ``--prepared`` when given (the slow part: index and maps)."""
    if args.prepared and args.prepared.is_file():
        with args.prepared.open("rb") as fh:
            space, masks, ranges = pickle.load(fh)
        return space, masks[:args.units], ranges[:args.cluster_units * args.clusters]
    from ray_dissect.datasets.synthetic.generate import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or generate_dataset(
            Path(tmp) / "ds", args.images, seed=0, image_size=args.image_size,
            mask_size=args.mask_size, vocabulary=args.vocabulary)
        ds, index, ids = build(root)
        acts = layer4(ds, len(ds))
    valid = np.asarray(index.valid)  # type: ignore[attr-defined]
    found = (SearchSpace.from_index(index),  # type: ignore[arg-type]
             [m for u in range(args.units) for m in masks_of(acts, u, ids, valid, 0)],
             [m for u in range(args.cluster_units)
              for m in masks_of(acts, u, ids, valid, args.clusters)])
    if args.prepared:
        with args.prepared.open("wb") as fh:
            pickle.dump(found, fh)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocabulary", default="default", choices=["default", "broden"])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--cluster-units", type=int, default=0)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--mask-size", type=int, default=112)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--prepared", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space, masks, ranges = prepare(args)
    print(f"concepts={len(space.atoms)} label_sets={space.membership_t.shape[1]} "
          f"quantile masks={len(masks)} range masks={len(ranges)} budget={args.budget} s "
          f"kernels={kernel_name()}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for name, group in (("quantile masks (one per unit)", masks),
                        (f"clustered ranges (K={args.clusters})", ranges)):
        if group:
            print(f"-- {name}")
            report(run(space, group, args.budget))
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
