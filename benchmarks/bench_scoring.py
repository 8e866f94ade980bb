"""CPU time of the scoring stage's per-unit work: today's path against the previous one.

One run, one process, one thread, both implementations on the same data, side by side:

1. **Scoring** (NetDissect): unit masks of every unit (quantile range) as label-set signatures,
   then the tally (|B and L|, category-conditional IoU) against every concept, the way
   ``pipeline/scoring.py`` does it (blocks of 128 units, 256 images). ``legacy`` is the
   implementation before the fast-scoring rewrite (``benchmarks/legacy_scoring.py``); both must
   give identical signatures and IoUs.
2. **Clustered search**: per unit, the masks of its quantile range and its ``--clusters``
   k-means ranges (one pass, as the scoring stage does) and a beam search (length 3, beam 5)
   per k-means range, against the quantile mode (one mask and one search per unit). Printed:
   cost per unit-cluster against cost per unit, and their ratio (target <= 2); also the 1-D
   k-means that finds the ranges (the ranges stage, run once per unit, outside the ratio).

Data: a generated dataset (``ray_dissect.datasets.synthetic``, default 2,000 images, 112-px
masks) and synthetic post-ReLU activations (N, 512, 7, 7) float32 (smoothed Gaussian noise
times a per-image gain), thresholds at quantile 0.005 as NetDissect.

``--compare-with TREE`` also times another checkout's ``range_masks`` (e.g. the commit before a
change, exported with ``git archive``) in the same process, on the same data, and checks it
gives the same signatures: the ``before`` rows, and two ``interleaved`` rows timing the masks
alone with both implementations alternating call by call (robust to load changes in a run).

``--repeat N`` runs every measurement N times (rounds alternating between the
implementations) and reports each one's best round, as ``timeit`` does: on this 2-core machine
the legacy path's CPU time moves by a third between runs (8.5-12.8 s), and other load only
ever adds time.

Implementations side by side: ``legacy``, ``numpy`` (the tile walk, forced with
``RAY_DISSECT_KERNELS=numpy``), ``numba`` (the compiled kernels, when numba imports; their
first-call time is printed: compilation, or loading numba's on-disk cache) and ``device``
(the torch pass on CUDA, when a GPU is present).

3. **Concept index** (with ``--root``, or alone with ``--index-only``): CPU time per image of
   one 256-image ``build_shard`` (decoding every mask file, grouping the label sets) with the
   numpy and the numba kernels, and ``--compare-with``'s alike, rounds alternating, best of
   ``max(N, 3)`` (``--repeat N``); the shards must be identical.

Usage: python benchmarks/bench_scoring.py [--images 2000] [--units 512] [--search-units 16]
       [--clusters 5] [--root DIR] [--compare-with TREE] [--repeat N] [--index-only]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import legacy_scoring
from bench_search import build

from ray_dissect.concepts.device import device_range_masks
from ray_dissect.concepts.index import build_shard
from ray_dissect.concepts.kernels import KERNEL_ENV, kernel_name
from ray_dissect.concepts.masks import UnitMask, range_masks
from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.explain.netdissect import tally
from ray_dissect.explain.ranges import range_specs
from ray_dissect.explain.search import SearchParams, SearchSpace, beam_search
from ray_dissect.spec import DatasetSpec
from ray_dissect.units.ranges import unit_ranges
from ray_dissect.units.thresholds import unit_thresholds

UNITS_PER_TASK, BLOCK_IMAGES, SHARD_IMAGES = 128, 256, 256


def activations(n: int, units: int, seed: int = 0) -> np.ndarray:
    """(n, units, 7, 7) float32 post-ReLU maps: smoothed noise times a per-image gain."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(n, units, 9, 9)).astype(np.float32))
    smooth = F.avg_pool2d(noise, 3, stride=1).numpy()
    gain = rng.lognormal(0, 0.5, size=(n, units, 1, 1)).astype(np.float32)
    return np.maximum(smooth * gain, 0).astype(np.float32)


Masker = Callable[[np.ndarray, list, np.ndarray, int, np.ndarray], list[list[UnitMask]]]


def with_kernels(kernels: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with ``RAY_DISSECT_KERNELS`` set to ``kernels`` meanwhile."""
    before = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = kernels
    try:
        return fn(*args)
    finally:
        if before is None:
            del os.environ[KERNEL_ENV]
        else:
            os.environ[KERNEL_ENV] = before


def forced_masker(kernels: str) -> Masker:
    """``range_masks`` with the kernels forced to ``kernels`` ("numpy" or "numba") during
    each call (:func:`with_kernels`)."""
    def masker(*args: Any) -> list[list[UnitMask]]:
        masks: list[list[UnitMask]] = with_kernels(kernels, range_masks, *args)
        return masks
    return masker


def warm_up() -> None:
    """One tiny call of the numba path: compiles the kernels, or loads them from the cache."""
    acts = np.ones((1, 1, 2, 2), np.float32)
    forced_masker("numba")(acts, [(np.zeros(1), np.full(1, np.inf), False)],
                           np.zeros((1, 4, 4), np.int64), 0, np.ones(1, bool))


def tree_modules(tree: Path, *names: str) -> list[Any]:
    """Modules of another checkout, imported under its own ``ray_dissect`` (this process's
    ``ray_dissect`` modules are set aside meanwhile and restored)."""
    ours = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "ray_dissect"}
    for name in ours:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(tree))
        for name in [n for n in sys.modules if n.split(".")[0] == "ray_dissect"]:
            del sys.modules[name]
        sys.modules.update(ours)


def tree_masker(tree: Path) -> Masker:
    """``range_masks`` of another checkout (:func:`tree_modules`)."""
    masker: Masker = tree_modules(tree, "ray_dissect.concepts.masks")[0].range_masks
    return masker


def index_shard(root: Path, tree: Path | None, rounds: int, images: int = SHARD_IMAGES) -> None:
    """CPU ms per image of one ``build_shard`` of ``images`` images (decode every mask file,
    group the label sets), with the numpy and the numba kernels, and ``tree``'s (the
    checkout before a change, e.g. ``git archive``) alike; rounds alternate between all of
    them, each one's best is printed, and every shard must be identical array for array."""
    builders: dict[str, tuple[Any, Any]] = {"": (BrodenDataset, build_shard)}
    if tree is not None:
        broden, index = tree_modules(tree, "ray_dissect.datasets.broden",
                                     "ray_dissect.concepts.index")
        builders["before "] = (broden.BrodenDataset, index.build_shard)
    runs = {f"{who}{k}": (cls(DatasetSpec(root=str(root))), builder, k)
            for who, (cls, builder) in builders.items() for k in ("numpy", "numba")}
    best: dict[str, float] = {}
    first = None
    for _ in range(rounds):
        for name, (ds, builder, kernels) in runs.items():
            t = time.process_time()
            shard = with_kernels(kernels, builder, ds, 0, min(images, len(ds)))
            best[name] = min(best.get(name, np.inf), time.process_time() - t)
            first = first or shard
            assert all(np.array_equal(getattr(first, f), getattr(shard, f))
                       for f in ("set_ids", "set_indptr", "set_labels", "image_indptr",
                                 "image_sets", "image_counts", "valid")), f"shards differ ({name})"
    slowest = best.get("before numpy", best["numpy"])
    for name, t in best.items():
        print(f"concept index shard, {name:13s}: {1000 * t / images:6.3f} ms per image, "
              f"{slowest / t:.2f}x the slowest (identical shards)")


def legacy_ranges(acts: np.ndarray, ranges: list, ids: np.ndarray, start: int,
                  valid: np.ndarray) -> list[list[UnitMask]]:
    """The previous scoring stage: one legacy ``unit_masks`` pass per range."""
    return [legacy_scoring.unit_masks(acts, lo, hi, ids, start, valid, inc)
            for lo, hi, inc in ranges]


def block_masks(masker: Masker, acts: np.ndarray, ranges: list, ids: np.ndarray,
                valid: np.ndarray) -> list[list[UnitMask]]:
    """masks[r][u] of one block of units over all images, in blocks of images."""
    k = acts.shape[1]
    parts: list[list[list[UnitMask]]] = [[[] for _ in range(k)] for _ in ranges]
    for s in range(0, len(acts), BLOCK_IMAGES):
        sl = slice(s, s + BLOCK_IMAGES)
        for r, per_unit in enumerate(masker(acts[sl], ranges, ids[sl], s, valid[sl])):
            for u, m in enumerate(per_unit):
                parts[r][u].append(m)
    return [[UnitMask.concat(p) for p in per] for per in parts]


def score_all(masker: Masker, acts: np.ndarray, thr: np.ndarray, ids: np.ndarray,
              index: object) -> tuple[float, list[UnitMask], np.ndarray]:
    """Seconds, signatures and category IoUs of every unit's quantile mask."""
    t = time.process_time()
    masks: list[UnitMask] = []
    ious = []
    for u0 in range(0, acts.shape[1], UNITS_PER_TASK):
        sl = slice(u0, u0 + UNITS_PER_TASK)
        k = acts[:, sl].shape[1]
        (block,) = block_masks(masker, acts[:, sl], [(thr[sl], np.full(k, np.inf), False)],
                               ids, index.valid)  # type: ignore[attr-defined]
        ious.append(tally(block, index, "category").iou(1e-10))  # type: ignore[arg-type]
        masks.extend(block)
    return time.process_time() - t, masks, np.concatenate(ious)


def same_masks(a: list[UnitMask], b: list[UnitMask]) -> bool:
    """Signatures equal array for array."""
    return all(np.array_equal(getattr(x, f), getattr(y, f))
               for x, y in zip(a, b, strict=True) for f in ("images", "sets", "counts"))


def search_cost(masker: Masker, acts: np.ndarray, thr: np.ndarray, ranges: np.ndarray,
                ids: np.ndarray, index: object, space: SearchSpace
                ) -> tuple[float, float, int, list]:
    """(mask seconds, search seconds, searches, beams) of a block of units and its ranges;
    ``ranges`` (k, clusters, 2), or (k, 0, 2) for the quantile mode."""
    specs = range_specs(thr, ranges, inclusive=False)
    bounds = [(s.lo, s.hi, s.inclusive) for s in specs]
    t = time.process_time()
    masks = block_masks(masker, acts, bounds, ids, index.valid)  # type: ignore[attr-defined]
    t_mask = time.process_time() - t
    searched = range(1, len(specs)) if len(specs) > 1 else range(1)
    params, beams = SearchParams(length=3, beam=5), []
    t = time.process_time()
    for u in range(acts.shape[1]):
        for r in searched:
            if np.isfinite(specs[r].lo[u]):
                beams.append(beam_search(masks[r][u], space, params).beam)
    return t_mask, time.process_time() - t, len(beams), beams


def _best(rounds: int, *args: Any) -> tuple[float, float, int, list]:
    """The round of :func:`search_cost` ``(*args)`` with the least mask + search seconds."""
    return min((search_cost(*args) for _ in range(rounds)), key=lambda m: m[0] + m[1])


def clustered(acts: np.ndarray, thr: np.ndarray, ids: np.ndarray, index: object,
              clusters: int, maskers: dict[str, Masker], rounds: int = 1) -> None:
    """Print clustered cost per unit-cluster against quantile-mode cost per unit (each the
    best of ``rounds`` rounds)."""
    space = SearchSpace.from_index(index)  # type: ignore[arg-type]
    k = acts.shape[1]
    t = time.process_time()
    found = unit_ranges(acts, clusters, seed=0)
    t_kmeans = time.process_time() - t
    ranges = np.full((k, clusters, 2), np.nan)
    for u, unit in enumerate(found):
        ranges[u, :len(unit)] = unit
    none = np.zeros((k, 0, 2))
    rows = {}
    for name, masker in maskers.items():
        q = _best(rounds, masker, acts, thr, none, ids, index, space)
        c = _best(rounds, masker, acts, thr, ranges, ids, index, space)
        rows[name] = (q, c)
        per_unit = (q[0] + q[1]) / q[2]
        per_uc = (c[0] + c[1]) / c[2]
        print(f"{name:6s} quantile mode : {1000 * per_unit:8.1f} ms per unit "
              f"(masks {1000 * q[0] / k:.1f} + search {1000 * q[1] / q[2]:.1f})")
        print(f"{name:6s} clustered K={clusters}: {1000 * per_uc:8.1f} ms per unit-cluster "
              f"(masks {1000 * c[0] / c[2]:.1f} + search {1000 * c[1] / c[2]:.1f}), "
              f"ratio {per_uc / per_unit:.2f}x (target <= 2)")
    n_ranges = sum(len(u) for u in found)
    print(f"k-means ranges (ranges stage, not in the ratio): {1000 * t_kmeans / n_ranges:.1f} ms "
          f"per unit-cluster")
    for name in maskers:
        assert rows["legacy"][1][3] == rows[name][1][3], f"clustered beams differ ({name})"
        assert rows["legacy"][0][3] == rows[name][0][3], f"quantile beams differ ({name})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--search-units", type=int, default=16)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset directory, generated there when missing (kept)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="N rounds of every measurement, each one's best round reported")
    parser.add_argument("--compare-with", type=Path, default=None, metavar="TREE",
                        help="also time this checkout's range_masks (rows 'before')")
    parser.add_argument("--index-only", action="store_true",
                        help="only the concept index shard (numpy, numba and --compare-with's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.index_only:
        root = args.root or Path(tempfile.mkdtemp()) / "ds"
        if not root.exists():
            generate_dataset(root, args.images, seed=0, image_size=32, mask_size=112)
        index_shard(root, args.compare_with, args.repeat)
        return
    maskers: dict[str, Masker] = {"legacy": legacy_ranges}
    if args.compare_with is not None:
        maskers["before"] = tree_masker(args.compare_with)
    maskers["numpy"] = forced_masker("numpy")
    if torch.cuda.is_available():
        maskers["device"] = lambda *a: device_range_masks(*a, "cuda")
    if kernel_name() == "numba":
        maskers["numba"] = forced_masker("numba")
        t = time.perf_counter()
        warm_up()
        print(f"numba kernels: first call {time.perf_counter() - t:.2f} s wall (compiled, or "
              f"loaded from numba's on-disk cache when an earlier run compiled them)")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp) / "ds"
        if not root.exists():
            generate_dataset(root, args.images, seed=0, image_size=32, mask_size=112)
        ds, index, ids = build(root)
    acts = activations(len(ds), args.units)
    thr, _ = unit_thresholds(acts, 0.005)
    print(f"images={len(ds)} units={args.units} maps={acts.shape[2:]} mask={ds.mask_shape} "
          f"label_sets={index.n_sets}")  # type: ignore[attr-defined]
    times = scoring(maskers, acts, thr, ids, index, args.repeat)
    print(f"scoring legacy: {times['legacy']:8.2f} s CPU (unit masks + tally, {args.units} units)")
    if "before" in times:
        print(f"scoring before: {times['before']:8.2f} s CPU (--compare-with "
              f"{args.compare_with}; identical signatures and IoUs)")
    for name in ("numpy", "numba", "device"):
        if name in times:
            print(f"scoring {name:6s}: {times[name]:8.2f} s CPU (identical signatures and IoUs),"
                  f" {times['legacy'] / times[name]:.2f}x legacy (target >= 5x)")
    if "before" in times:
        print(f"numpy vs before: {times['before'] / times['numpy']:8.2f}x")
    clustered(acts[:, :args.search_units], thr[:args.search_units], ids, index, args.clusters,
              maskers, args.repeat)
    if "before" in maskers:
        interleaved(maskers["before"], acts, thr, ids, index, args.search_units, args.clusters)
    if args.root is not None:
        index_shard(args.root, args.compare_with, max(args.repeat, 3))


def interleaved(before: Masker, acts: np.ndarray, thr: np.ndarray, ids: np.ndarray,
                index: object, search_units: int, clusters: int) -> None:
    """Masks only, ``before`` and new alternating call by call (each block of units and
    images), so that load changes during the run hit both alike; results must be equal."""
    k = search_units
    ranges = np.full((k, clusters, 2), np.nan)
    for u, unit in enumerate(unit_ranges(acts[:, :k], clusters, seed=0)):
        ranges[u, :len(unit)] = unit
    specs = range_specs(thr[:k], ranges, inclusive=False)
    quantile = [(acts[:, u0:u0 + UNITS_PER_TASK], [(thr[u0:u0 + UNITS_PER_TASK],
                 np.full(acts[:, u0:u0 + UNITS_PER_TASK].shape[1], np.inf), False)])
                for u0 in range(0, acts.shape[1], UNITS_PER_TASK)]
    for name, calls in (("quantile masks, all units", quantile),
                        (f"clustered masks, {k} units x {len(specs)} ranges",
                         [(acts[:, :k], [(sp.lo, sp.hi, sp.inclusive) for sp in specs])])):
        spent = {"before": 0.0, "new": 0.0}
        for block, bounds in calls:
            for s in range(0, len(acts), BLOCK_IMAGES):
                sl = slice(s, s + BLOCK_IMAGES)
                args = (block[sl], bounds, ids[sl], s, index.valid[sl])  # type: ignore[attr-defined]
                out = {}
                for who, masker in (("before", before), ("new", forced_masker("numpy"))):
                    t = time.process_time()
                    out[who] = masker(*args)
                    spent[who] += time.process_time() - t
                assert all(same_masks(a, b) for a, b in zip(out["before"], out["new"],
                                                            strict=True)), "masks differ"
        print(f"interleaved {name}: before {spent['before']:.2f} s, new {spent['new']:.2f} s "
              f"CPU, {spent['before'] / spent['new']:.2f}x (identical)")


def scoring(maskers: dict[str, Masker], acts: np.ndarray, thr: np.ndarray, ids: np.ndarray,
            index: object, rounds: int = 1) -> dict[str, float]:
    """Best CPU seconds of :func:`score_all` per masker over ``rounds`` rounds (each round
    runs every masker in turn; each round is printed); every result must equal legacy's."""
    times: dict[str, float] = {}
    first = None
    for r in range(rounds):
        spent = {}
        for name, masker in maskers.items():
            t, masks, ious = score_all(masker, acts, thr, ids, index)
            first = first or (masks, ious)
            assert same_masks(first[0], masks) and np.array_equal(first[1], ious), (
                f"results differ ({name})")
            spent[name] = t
            times[name] = min(times.get(name, np.inf), t)
        if rounds > 1:
            print(f"  round {r + 1}: " + "  ".join(f"{n} {t:.2f} s" for n, t in spent.items()))
    return times


if __name__ == "__main__":
    main()
