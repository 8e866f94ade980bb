"""Zeroing hooks reach the logits through the model's own forward, on any architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ray_dissect.errors import ModelError
from ray_dissect.studies.hooks import (
    check_logits,
    decide,
    decisions,
    range_zeroer,
    unit_zeroer,
)


def _net() -> nn.Module:
    """conv -> ReLU -> conv -> flatten -> linear: not a ResNet, no avgpool or fc."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.Flatten(),
                         nn.Linear(2 * 4 * 4, 5)).eval()


def test_range_zeroing_equals_zeroing_by_hand() -> None:
    """The hooked logits are those of the later modules run on the hand-zeroed tensor."""
    net, x = _net(), torch.rand(3, 3, 8, 8)
    a = net[1](net[0](x))
    lo, hi = np.array([0.1, np.inf, 0.0, 0.2]), np.array([0.3, -np.inf, 0.05, 9.0])
    for inclusive in (True, False):
        ad = a.double()
        lo_t, hi_t = torch.tensor(lo)[None, :, None, None], torch.tensor(hi)[None, :, None, None]
        inside = (ad >= lo_t) & (ad <= hi_t) if inclusive else (ad > lo_t) & (ad < hi_t)
        want = net[2:](a.masked_fill(inside, 0.0)).double().detach().numpy()
        probs, classes = decisions(net, x, "1", range_zeroer(lo, hi, inclusive))
        assert np.allclose(probs, decide(want)[0]) and (classes == want.argmax(1)).all()


def test_unit_zeroing_sets_whole_channels_to_zero_nan_included() -> None:
    """Zeroed channels are exactly 0 even where the activation was NaN; others are kept."""
    out = torch.tensor([[[[np.nan, 1.0]], [[2.0, 3.0]], [[4.0, np.nan]]]])
    edited = unit_zeroer([0, 2], 3)(out)
    assert edited[0, 0].eq(0).all() and edited[0, 2].eq(0).all()
    assert torch.equal(edited[0, 1], out[0, 1])


def test_decide_is_the_softmax_and_the_first_argmax() -> None:
    """Probabilities sum to one; ties go to the lower class."""
    probs, classes = decide(np.array([[1.0, 3.0, 3.0], [0.0, 0.0, -1.0]]))
    assert np.allclose(probs.sum(1), 1) and classes.tolist() == [1, 0]
    assert probs[1, 0] == pytest.approx(np.e / (2 * np.e + 1))


def test_a_model_without_logits_is_refused_in_one_line() -> None:
    """A (n, c, h, w) output is not a classifier's; the message says what was found."""
    with pytest.raises(ModelError, match=r"not \(batch, classes\) logits; got \(1, 4, 6, 6\)"):
        check_logits(_net()[:2], 8)
    check_logits(_net(), 8)


@pytest.mark.parametrize(("inclusive", "kept"), [(True, [0.5, 2.5]), (False, [0.5, 0.1, 0.2,
                                                                               2.5])])
def test_bounds_rule_decides_the_endpoints(inclusive: bool, kept: list[float]) -> None:
    """Bounds taken from float32 values include exactly those values when inclusive."""
    out = torch.tensor([0.5, 0.1, 0.15, 0.2, 2.5], dtype=torch.float32).view(1, 1, 1, 5)
    lo, hi = np.array([float(np.float32(0.1))]), np.array([float(np.float32(0.2))])
    edited = range_zeroer(lo, hi, inclusive)(out).flatten()
    assert edited[edited != 0].tolist() == pytest.approx(kept)
