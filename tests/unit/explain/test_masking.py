"""Concept masking: dimming outside the explanation and the cosine in the range."""

from __future__ import annotations

import numpy as np

from ray_dissect.explain.masking import cosine_in_range, masked_images


def test_pixels_of_the_explanation_are_kept_and_others_dimmed() -> None:
    """Factor 1 inside the mask (away from its border), U(0, 1) outside, seeded."""
    img = np.full((8, 8, 3), 200, np.uint8)
    keep = np.zeros((1, 4, 4), bool)
    keep[0, :2, :] = True  # top half
    (out,) = masked_images([img], keep, [(1, 2, 3)])
    assert (out[:3] == 200).all()  # rows well inside the kept half
    assert (out[6:] < 200).all() and (out[6:] >= 0).all()
    (again,) = masked_images([img], keep, [(1, 2, 3)])
    assert np.array_equal(out, again)


def test_cosine_only_on_the_range_positions() -> None:
    """Positions outside (lo, hi) do not count; undefined images give NaN."""
    before = np.array([[[1.0, 5.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    after = np.array([[[2.0, -9.0], [7.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]], np.float32)
    cos = cosine_in_range(before, after, 0.5, 3.0, inclusive=False)
    assert np.isclose(cos[0], 1.0)  # (1, 2) vs (2, 4) on the in-range positions
    assert np.isnan(cos[1])
    flipped = cosine_in_range(before, -after, 0.5, 3.0, inclusive=False)
    assert np.isclose(flipped[0], -1.0)
