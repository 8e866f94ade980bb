"""The device pass (run here with device="cpu") gives the CPU path's signatures exactly."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.kernel_maps import dense_check, same, tricky

from ray_dissect.concepts import device as device_mod
from ray_dissect.concepts.device import device_range_masks
from ray_dissect.concepts.kernels import KERNEL_ENV
from ray_dissect.concepts.masks import range_masks


@pytest.mark.parametrize(("seed", "src", "shape"), [(0, (7, 7), (112, 112)),
                                                   (1, (6, 5), (113, 47)),
                                                   (2, (4, 4), (4, 4)),
                                                   (3, (9, 8), (5, 6))])
def test_device_pass_equals_cpu_paths_and_dense_masks(monkeypatch, seed, src, shape) -> None:
    """Ties, near-ties, non-finite and zero maps, per-image bounds: identical to the numpy
    reference array for array and to dense torch masks."""
    acts, ranges, set_ids, valid = tricky(seed, src, shape)
    monkeypatch.setenv(KERNEL_ENV, "numpy")
    ref = range_masks(acts, ranges, set_ids, 30, valid)
    got = device_range_masks(acts, ranges, set_ids, 30, valid, "cpu")
    same(got, ref)
    dense_check(got, acts, ranges, set_ids, valid, 30)


def test_a_device_rounding_differently_gives_the_same_masks(monkeypatch) -> None:
    """A device whose upsampling is off by a few float32 ulps (as a GPU kernel may be) still
    gives the CPU's masks: such pixels are within the margin and redone on the CPU."""
    rng = np.random.default_rng(9)

    def noisy(x: torch.Tensor, **kw: object) -> torch.Tensor:
        up = F.interpolate(x, **kw)  # type: ignore[arg-type]
        ulps = torch.from_numpy(rng.integers(-3, 4, size=tuple(up.shape)).astype(np.float32))
        return up + ulps * torch.finfo(torch.float32).eps * up.abs()

    monkeypatch.setattr(device_mod, "F", types.SimpleNamespace(interpolate=noisy))
    acts, ranges, set_ids, valid = tricky(5, (7, 7), (112, 112))
    ref = range_masks(acts, ranges, set_ids, 0, valid)
    same(device_range_masks(acts, ranges, set_ids, 0, valid, "cpu"), ref)
