"""Heuristic IoU bounds: rectangles against brute force, admissibility against dense masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from ray_dissect.explain import heuristics
from ray_dissect.explain.heuristics import (
    HEURISTICS,
    bounding_boxes,
    estimates,
    largest_inscribed,
    sample_stats,
)

N, H, W = 5, 8, 8


def brute_inscribed_area(mask: np.ndarray) -> int:
    h, w = mask.shape
    best = 0
    for r0, r1 in itertools.combinations_with_replacement(range(h), 2):
        for c0, c1 in itertools.combinations_with_replacement(range(w), 2):
            if mask[r0:r1 + 1, c0:c1 + 1].all():
                best = max(best, (r1 - r0 + 1) * (c1 - c0 + 1))
    return best


def blobs(rng: np.random.Generator, n: int = N, h: int = H, w: int = W) -> np.ndarray:
    """Unions of 0-2 random rectangles per image, or thresholded noise."""
    if rng.random() < 0.2:
        return rng.random((n, h, w)) < rng.random()
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            r0, r1 = sorted(rng.integers(0, h, 2))
            c0, c1 = sorted(rng.integers(0, w, 2))
            out[i, r0:r1 + 1, c0:c1 + 1] = True
    return out


def scene(rng: np.random.Generator, n: int = N, h: int = H, w: int = W) -> np.ndarray:
    """A whole-image label: every image is all ones or all zeros."""
    return np.broadcast_to(rng.random(n)[:, None, None] < 0.5, (n, h, w)).copy()


def random_formula(rng: np.random.Generator, atoms: np.ndarray, depth: int) -> np.ndarray:
    if depth == 0 or rng.random() < 0.3:
        return atoms[rng.integers(len(atoms))]
    op = rng.integers(3)
    if op == 0:
        return ~random_formula(rng, atoms, depth - 1)
    a, b = random_formula(rng, atoms, depth - 1), random_formula(rng, atoms, depth - 1)
    return a & b if op == 1 else a | b


def true_ious(f: np.ndarray, atoms: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """(3, A) exact IoU of F OR t, F AND t, F AND NOT t."""
    out = np.zeros((3, len(atoms)))
    for k, t in enumerate(atoms):
        for op, m in enumerate((f | t, f & t, f & ~t)):
            union = np.count_nonzero(m | unit)
            out[op, k] = np.count_nonzero(m & unit) / union if union else 0.0
    return out


def all_estimates(f: np.ndarray, atoms: np.ndarray, unit: np.ndarray) -> dict[str, np.ndarray]:
    left, stats = sample_stats(f, unit), sample_stats(atoms, unit)
    unit_area = np.count_nonzero(unit, axis=(1, 2)).astype(np.int64)
    size = unit.shape[1] * unit.shape[2]
    return {k: estimates(k, left, stats, unit_area, size) for k in HEURISTICS}


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    atoms = [blobs(rng) for _ in range(6)]
    atoms += [atoms[0] & blobs(rng), atoms[1] | blobs(rng)]  # a subset and a superset
    atoms += [np.ones((N, H, W), bool), np.zeros((N, H, W), bool), scene(rng)]
    atoms = np.stack(atoms)
    f = random_formula(rng, atoms, 3)
    unit = blobs(rng)
    if rng.random() < 0.5:  # a unit that contains whole atoms
        unit |= atoms[rng.integers(len(atoms) - 3)] | f
    return f, atoms, unit


# --- rectangles ------------------------------------------------------------------------------


def test_largest_inscribed_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    masks = [rng.random((6, 7)) < p for p in np.linspace(0.2, 0.95, 300)]
    masks += [np.zeros((6, 7), bool), np.ones((6, 7), bool)]
    masks = np.stack(masks)
    rects = largest_inscribed(masks)
    assert rects.shape == (len(masks), 4) and rects.dtype == np.int32
    for mask, (r0, c0, r1, c1) in zip(masks, rects, strict=True):
        expected = brute_inscribed_area(mask)
        area = max(r1 - r0 + 1, 0) * max(c1 - c0 + 1, 0)
        assert area == expected
        if expected == 0:
            assert (r0, c0, r1, c1) == (0, 0, -1, -1)
        else:
            assert mask[r0:r1 + 1, c0:c1 + 1].all()


def longest_run(v: np.ndarray) -> int:
    best = run = 0
    for x in v:
        run = run + 1 if x else 0
        best = max(best, run)
    return best


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (17, 33), (40, 9)])
def test_largest_inscribed_other_shapes(shape: tuple[int, int]) -> None:
    """Reference: for every band of rows, the longest run of all-ones columns."""
    rng = np.random.default_rng(sum(shape))
    h = shape[0]
    masks = np.stack([rng.random(shape) < p for p in np.linspace(0.5, 0.97, 40)])
    rects = largest_inscribed(masks)
    for mask, (r0, c0, r1, c1) in zip(masks, rects, strict=True):
        expected = max(longest_run(mask[a:b + 1].all(axis=0)) * (b - a + 1)
                       for a in range(h) for b in range(a, h))
        assert max(r1 - r0 + 1, 0) * max(c1 - c0 + 1, 0) == expected
        assert expected == 0 or mask[r0:r1 + 1, c0:c1 + 1].all()


def test_largest_inscribed_keeps_leading_axes() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((2, 3, 6, 7)) < 0.7
    rects = largest_inscribed(masks)
    assert rects.shape == (2, 3, 4)
    np.testing.assert_array_equal(rects.reshape(-1, 4), largest_inscribed(masks.reshape(-1, 6, 7)))


def test_bounding_boxes_match_nonzero() -> None:
    rng = np.random.default_rng(2)
    masks = rng.random((200, 6, 7)) < rng.random((200, 1, 1)) * 0.3
    masks[0] = False
    masks[1] = True
    boxes = bounding_boxes(masks)
    assert boxes.dtype == np.int32
    for mask, box in zip(masks, boxes, strict=True):
        rows, cols = np.nonzero(mask)
        expected = (rows.min(), cols.min(), rows.max(), cols.max()) if len(rows) else (0, 0, -1, -1)
        assert tuple(box) == expected


def test_sample_stats_shapes_and_counts() -> None:
    rng = np.random.default_rng(3)
    masks, unit = rng.random((4, N, H, W)) < 0.5, rng.random((N, H, W)) < 0.5
    many, one = sample_stats(masks, unit), sample_stats(masks[2], unit)
    assert many.area.shape == many.inter.shape == (4, N) and many.box.shape == (4, N, 4)
    assert many.inscribed.shape == (4, N, 4) and one.area.shape == (N,)
    assert many.area.dtype == many.inter.dtype == np.int64
    np.testing.assert_array_equal(many.area, masks.sum(axis=(2, 3)))
    np.testing.assert_array_equal(many.inter, (masks & unit).sum(axis=(2, 3)))
    for name in ("area", "inter", "box", "inscribed"):
        np.testing.assert_array_equal(getattr(one, name), getattr(many, name)[2])
    with pytest.raises(ValueError, match="do not match"):
        sample_stats(masks[:, :, :4], unit)


# --- admissibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_estimates_are_admissible(seed: int) -> None:
    f, atoms, unit = make_case(seed)
    truth = true_ious(f, atoms, unit)
    for kind, est in all_estimates(f, atoms, unit).items():
        assert est.shape == truth.shape and est.dtype == np.float64
        assert np.all(est >= truth - 1e-12), (kind, est - truth)
        assert np.all(est <= 1.0) and np.all(est >= 0.0)


@settings(max_examples=300, deadline=None)
@given(unit=arrays(bool, (3, 3, 4)), f=arrays(bool, (3, 3, 4)), atoms=arrays(bool, (4, 3, 3, 4)))
def test_estimates_admissible_on_arbitrary_masks(unit, f, atoms) -> None:
    truth = true_ious(f, atoms, unit)
    for kind, est in all_estimates(f, atoms, unit).items():
        assert np.all(est >= truth - 1e-12), kind


@pytest.mark.parametrize("seed", range(50))
def test_mmesh_is_no_looser_than_cfh(seed: int) -> None:
    f, atoms, unit = make_case(seed)
    est = all_estimates(f, atoms, unit)
    assert np.all(est["mmesh"] <= est["cfh"] + 1e-12)


def published_mmesh(f: np.ndarray, atoms: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """The MMESH formulas as published (amin/Imax per sample), straight from the masks."""
    left, t = sample_stats(f, unit), sample_stats(atoms, unit)
    ax, ov = unit.sum(axis=(1, 2)), heuristics._overlap
    al, il, at, it = left.area, left.inter, t.area, t.inter
    box = ov(left.box, t.box)
    out = []
    for imax, amin in (
        (np.minimum(ax, il + it), np.maximum.reduce([al + 0 * at, at, al + at - box])),
        (np.minimum(il, it), ov(left.inscribed, t.inscribed)),
        (np.minimum(il, ax - it), al - box),
    ):
        amin = np.maximum(amin, imax)
        den = ax.sum() + amin.sum(-1) - imax.sum(-1)
        out.append(np.where(den > 0, imax.sum(-1) / np.maximum(den, 1), 0.0))
    return np.stack(out)


@pytest.mark.parametrize("seed", range(100))
def test_mmesh_is_no_looser_than_published(seed: int) -> None:
    f, atoms, unit = make_case(seed)
    assert np.all(all_estimates(f, atoms, unit)["mmesh"] <= published_mmesh(f, atoms, unit) + 1e-12)
    assert np.all(published_mmesh(f, atoms, unit) >= true_ious(f, atoms, unit) - 1e-12)


@pytest.mark.parametrize("seed", range(50))
def test_whole_image_labels_are_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    unit = blobs(rng)
    atoms = np.stack([scene(rng) for _ in range(4)] + [np.ones((N, H, W), bool)])
    for f in (blobs(rng), scene(rng)):
        truth = true_ious(f, atoms, unit)
        est = all_estimates(f, atoms, unit)
        np.testing.assert_allclose(est["mmesh"], truth, rtol=0, atol=1e-12)
        np.testing.assert_allclose(est["cfh"], truth, rtol=0, atol=1e-12)
    f = scene(rng)  # whole-image formula, ordinary atoms
    atoms = np.stack([blobs(rng) for _ in range(4)])
    np.testing.assert_allclose(all_estimates(f, atoms, unit)["mmesh"], true_ious(f, atoms, unit),
                               rtol=0, atol=1e-12)


def test_far_apart_blobs_give_zero_and_bound() -> None:
    unit = np.zeros((2, 12, 12), bool)
    unit[:, :, :] = True  # the unit covers both blobs
    f = np.zeros_like(unit)
    f[:, 0:3, 0:3] = True
    t = np.zeros((1, *unit.shape), bool)
    t[:, :, 8:12, 8:12] = True
    est = all_estimates(f, t, unit)
    assert est["mmesh"][1, 0] == 0.0
    assert est["cfh"][1, 0] > 0.0  # without coordinates the overlap cannot be ruled out
    assert est["mmesh"][0, 0] == pytest.approx(true_ious(f, t, unit)[0, 0])


def rect(rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((H, W), bool)
    r0, r1 = sorted(rng.integers(0, H, 2))
    c0, c1 = sorted(rng.integers(0, W, 2))
    out[r0:r1 + 1, c0:c1 + 1] = True
    return out


@pytest.mark.parametrize("seed", range(200))
def test_rectangles_wholly_inside_or_outside_the_unit_are_exact(seed: int) -> None:
    """Boxes and inscribed rectangles give |F and t| exactly; the unit then splits it."""
    rng = np.random.default_rng(seed)
    f, t, unit = (np.zeros((N, H, W), bool) for _ in range(3))
    for i in range(N):
        f[i], t[i], extra = rect(rng), rect(rng), rect(rng)
        inside_f = rng.random() < 0.5
        inside_t = inside_f if (f[i] & t[i]).any() else rng.random() < 0.5
        outside = (f[i] if not inside_f else 0) | (t[i] if not inside_t else 0)
        unit[i] = (extra & ~outside) | (f[i] if inside_f else 0) | (t[i] if inside_t else 0)
    est = all_estimates(f, t[None], unit)["mmesh"]
    np.testing.assert_allclose(est, true_ious(f, t[None], unit), rtol=0, atol=1e-12)


def test_boxes_force_the_overlap() -> None:
    """Image 0: two 12-px masks in one 4x4 box must share 8 px; image 1: all in the unit."""
    unit = np.zeros((2, H, W), bool)
    f, t = np.zeros_like(unit), np.zeros((1, *unit.shape), bool)
    f[0, :4, :4] = ~np.eye(4, dtype=bool)
    t[0, 0, :4, :4] = ~np.eye(4, dtype=bool)[::-1]
    unit[1, :, :] = True
    f[1, 2:5, 2:5] = t[0, 1, 2:5, 2:5] = True
    est, truth = all_estimates(f, t, unit)["mmesh"], true_ious(f, t, unit)
    assert est[1, 0] == pytest.approx(truth[1, 0], abs=1e-12)  # AND: the overlap is known


def test_chunking_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    f, atoms, unit = make_case(7)
    whole = all_estimates(f, atoms, unit)
    monkeypatch.setattr(heuristics, "_CHUNK", 2 * N)  # two atoms per block
    for kind, est in all_estimates(f, atoms, unit).items():
        np.testing.assert_array_equal(est, whole[kind])


def test_empty_unit_and_unknown_kind() -> None:
    f, atoms, unit = make_case(3)
    est = all_estimates(f, atoms, np.zeros_like(unit))
    for kind in HEURISTICS:
        np.testing.assert_array_equal(est[kind], np.zeros((3, len(atoms))))
    left, stats = sample_stats(f, unit), sample_stats(atoms, unit)
    with pytest.raises(ValueError, match="unknown heuristic"):
        estimates("nope", left, stats, np.ones(N, np.int64), H * W)
