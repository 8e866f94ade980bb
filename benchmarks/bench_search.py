"""CPU time per unit-cluster: label-set beam search against the dense exhaustive oracle.

Both run in this process, one thread, on the same unit masks of a generated dataset (default
5,000 images, >= 100 concepts, 32-px masks) and must return identical final beams (formulas,
intersections, unions). Units are synthetic but concept-driven: each unit's 8x8 activation
map mixes three random concepts' (downsampled) masks with noise, so its ranges overlap real
concepts. Each unit is split into ``--clusters`` activation ranges by the project's 1-D
k-means, as in Clustered Compositional Explanations; a unit-cluster is one range's search.

Timed per unit-cluster (``time.process_time``):
- fast:  unit-mask signature (upsample + label-set counts) + ``search.beam_search``;
- dense: dense unit mask + ``dense_oracle.dense_beam_search`` (concept masks are built once
  per dataset beforehand and not timed, as the reference tools cache them).

Usage: python benchmarks/bench_search.py [--images 5000] [--units 2] [--clusters 5]
       [--oracle-ranges 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from dense_oracle import dense_beam_search

from ray_dissect.concepts.index import build_shard, merge_shards
from ray_dissect.concepts.masks import unit_masks
from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.explain.search import SearchParams, SearchSpace, beam_search
from ray_dissect.spec import DatasetSpec
from ray_dissect.units.ranges import kmeans_1d

SHARD = 256


def build(root: Path) -> tuple[BrodenDataset, object, np.ndarray]:
    """Concept index and (N, sh, sw) global label-set ids, in-process."""
    ds = BrodenDataset(DatasetSpec(root=str(root)))
    shards = [build_shard(ds, s, min(s + SHARD, len(ds))) for s in range(0, len(ds), SHARD)]
    index = merge_shards(ds.vocab, ds.mask_shape, SHARD, shards)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    return ds, index, ids


def dense_concepts(index: object, ids: np.ndarray, atoms: np.ndarray) -> dict[int, np.ndarray]:
    """Dense (N, S) bool mask per atom (what the reference tools materialise)."""
    space_leaf = SearchSpace.from_index(index).leaf  # type: ignore[arg-type]
    flat = ids.reshape(len(ids), -1)
    return {int(a): space_leaf(int(a))[flat] for a in atoms}


def synthetic_units(concepts: dict[int, np.ndarray], shape: tuple[int, int], n_units: int,
                    seed: int) -> np.ndarray:
    """(N, units, 8, 8) float32 activations mixing three concepts each, plus noise."""
    rng = np.random.default_rng(seed)
    keys = sorted(concepts)
    n = next(iter(concepts.values())).shape[0]
    out = np.zeros((n, n_units, 8, 8), np.float32)
    for u in range(n_units):
        for c in rng.choice(keys, size=3, replace=False):
            m = torch.from_numpy(concepts[int(c)].reshape(n, 1, *shape).astype(np.float32))
            out[:, u] += rng.uniform(0.5, 2.0) * F.adaptive_avg_pool2d(m, 8)[:, 0].numpy()
        out[:, u] += rng.normal(0, 0.1, size=(n, 8, 8)).astype(np.float32)
    return np.maximum(out, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--oracle-ranges", type=int, default=3)
    parser.add_argument("--root", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or generate_dataset(Path(tmp) / "ds", args.images, seed=0,
                                             image_size=64, mask_size=32)
        ds, index, ids = build(root)
    space = SearchSpace.from_index(index)  # type: ignore[arg-type]
    concepts = dense_concepts(index, ids, space.atoms)
    acts = synthetic_units(concepts, ds.mask_shape, args.units, seed=1)
    params = SearchParams(length=3, beam=5)
    print(f"images={len(ds)} concepts={len(space.atoms)} label_sets={index.n_sets} "
          f"mask={ds.mask_shape} units={args.units} clusters={args.clusters}")
    fast_times, dense_times, checked = [], [], 0
    valid = np.ones(len(ds), bool)
    for u in range(args.units):
        values = acts[:, u].ravel()
        for lo, hi in kmeans_1d(values[values > 0], args.clusters, seed=0):
            t = time.process_time()
            (mask,) = unit_masks(acts[:, u:u + 1], np.array([lo]), np.array([hi]), ids, 0,
                                 valid, inclusive=True)
            fast = beam_search(mask, space, params)
            fast_times.append(time.process_time() - t)
            if checked < args.oracle_ranges:
                t = time.process_time()
                up = F.interpolate(torch.from_numpy(acts[:, u:u + 1]), size=ds.mask_shape,
                                   mode="bilinear", align_corners=False)[:, 0].numpy()
                dense_b = ((up >= lo) & (up <= hi)).reshape(len(ds), -1)
                want = dense_beam_search(dense_b, concepts, length=3, beam=5)
                dense_times.append(time.process_time() - t)
                got = [(s.formula, s.inter, s.union) for s in fast.beam]
                assert got == want, f"unit {u} range ({lo}, {hi}): fast != dense"
                checked += 1
    fast_mean, dense_mean = float(np.mean(fast_times)), float(np.mean(dense_times))
    print(f"fast  search: {1000 * fast_mean:10.1f} ms CPU per unit-cluster "
          f"({len(fast_times)} unit-clusters)")
    print(f"dense oracle: {1000 * dense_mean:10.1f} ms CPU per unit-cluster "
          f"({len(dense_times)} unit-clusters, identical final beams)")
    print(f"speed-up    : {dense_mean / fast_mean:10.1f}x  (target >= 100x)")


if __name__ == "__main__":
    main()
