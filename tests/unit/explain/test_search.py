"""The label-set beam search returns exactly the dense oracle's final beam."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.fake_dataset import FakeDataset, index_of

from ray_dissect.concepts.masks import unit_masks
from ray_dissect.explain.formula import And, Leaf, Not, Or
from ray_dissect.explain.search import SearchParams, SearchSpace, beam_search, order_key

_PATH = Path(__file__).parents[3] / "benchmarks" / "dense_oracle.py"
_spec = importlib.util.spec_from_file_location("dense_oracle", _PATH)
oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("dense_oracle", oracle)
_spec.loader.exec_module(oracle)


def _fixture(seed: int, n_labels: int = 9, n: int = 16):
    """A random concept dataset, its search space, a unit mask and the dense masks."""
    ds = FakeDataset(n, n_labels, seed, shape=(6, 6))
    index, shards = index_of(ds, n_labels, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    rng = np.random.default_rng(seed + 100)
    acts = rng.normal(size=(n, 1, 3, 3)).astype(np.float32)
    lo = np.array([float(np.quantile(acts, 0.7))])
    (mask,) = unit_masks(acts, lo, np.full(1, np.inf), ids, 0, index.valid)
    up = F.interpolate(torch.from_numpy(acts), size=(6, 6), mode="bilinear",
                       align_corners=False).numpy()
    dense_b = (up[:, 0] > lo[0]).reshape(n, -1)
    dense = ds.dense(n_labels)
    concepts = {c: dense[c] for c in range(1, n_labels)}
    return SearchSpace.from_index(index), mask, dense_b, concepts


def _as_tuples(result):
    return [(s.formula, s.inter, s.union) for s in result.beam]


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize(("length", "beam", "dedup", "count_not"), [
    (3, 5, "equivalence", False), (2, 2, "string", False), (3, 3, "equivalence", True),
    (1, 4, "equivalence", False)])
def test_matches_dense_oracle(seed: int, length: int, beam: int, dedup: str,
                              count_not: bool) -> None:
    """Same formulas, same counts (hence IoUs), same order as the dense exhaustive search."""
    space, mask, dense_b, concepts = _fixture(seed)
    params = SearchParams(length=length, beam=beam, dedup=dedup, count_not=count_not)
    got = _as_tuples(beam_search(mask, space, params))
    want = oracle.dense_beam_search(dense_b, concepts, length=length, beam=beam, dedup=dedup,
                                    count_not=count_not)
    assert got == want


def test_order_key_is_the_oracles() -> None:
    """Both implementations break ties with the same string."""
    f = Or(And(Leaf(3), Not(Leaf(5))), Leaf(7))
    assert order_key(f) == oracle.order_key(f) == "O(A(L3,N(L5)),L7)"


def test_visited_counts_every_exact_candidate() -> None:
    """Exhaustive mode evaluates beam x allowed atoms x 3 candidates per step."""
    space, mask, _, _ = _fixture(3)
    res = beam_search(mask, space, SearchParams(length=2, beam=5, first_beam=2))
    atoms = len(space.atoms)
    assert res.visited == 2 * (atoms - 1) * 3
    assert res.best_unary is not None and isinstance(res.best_unary.formula, Leaf)


@pytest.mark.parametrize("kind", ["mmesh", "cfh", "areas"])
@pytest.mark.parametrize("seed", range(8))
def test_heuristics_never_change_the_result(kind: str, seed: int) -> None:
    """Pruning by an admissible bound gives the exhaustive beam with no more exact IoUs."""
    from ray_dissect.explain.pruning import Pruner

    space, mask, _dense_b, _concepts = _fixture(seed)
    ds = FakeDataset(16, 9, seed, shape=(6, 6))
    index, shards = index_of(ds, 9, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    params = SearchParams(length=3, beam=3)
    full = beam_search(mask, space, params)
    pruned = beam_search(mask, space, params, Pruner(space, ids, kind))
    assert _as_tuples(pruned) == _as_tuples(full)
    assert pruned.visited <= full.visited


def test_mmesh_prunes_on_a_concept_driven_unit() -> None:
    """On a unit that is exactly one concept, MMESH visits far fewer candidates."""
    from ray_dissect.concepts.masks import UnitMask
    from ray_dissect.explain.pruning import Pruner

    ds = FakeDataset(20, 9, seed=4, shape=(6, 6))
    index, shards = index_of(ds, 9, shard=5)
    ids = index.global_set_ids(np.concatenate([s.set_ids for s in shards]), 0)
    space = SearchSpace.from_index(index)
    target = space.leaf(int(space.atoms[0]))[ids]  # (N, 6, 6) a concept's own pixels
    images, sets = [], []
    for i in range(len(ds)):
        u, c = np.unique(ids[i][target[i]], return_counts=True)
        images += [i] * len(u)
        sets.append(np.stack([u, c]))
    both = np.concatenate(sets, axis=1)
    mask = UnitMask(np.array(images, np.int64), both[0].astype(np.int64),
                    both[1].astype(np.int64))
    params = SearchParams(length=3, beam=3)
    full = beam_search(mask, space, params)
    pruned = beam_search(mask, space, params, Pruner(space, ids, "mmesh"))
    assert _as_tuples(pruned) == _as_tuples(full)
    assert pruned.visited < full.visited / 2
