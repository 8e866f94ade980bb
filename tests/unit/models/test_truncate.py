"""Truncated forward passes: the layers' outputs, and nothing after the last of them runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ray_dissect.errors import ModelError
from ray_dissect.models.truncate import Truncated, call_order


class _Counting(nn.Module):
    """conv -> relu -> conv -> head, counting how often the head runs; ``shared`` runs twice."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.b = nn.Conv2d(4, 2, 3, padding=1)
        self.head = nn.Linear(2, 1)
        self.shared = nn.Identity()
        self.head_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.relu(self.a(x)))
        self.head_calls += 1
        return self.head(self.shared(self.shared(y)).mean((2, 3)))


def test_outputs_equal_the_full_forward_and_the_rest_is_skipped() -> None:
    """Outputs equal the modules' outputs computed directly, in run order, and the modules
    after the last listed one never run; the model is hook-free after the block."""
    model = _Counting().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad(), Truncated(model, ["b", "a"]) as cut:
        out = cut(x)
        direct_a = model.a(x)
        direct_b = model.b(model.relu(direct_a))
        only_b = cut.at("b")(x)
    assert list(out) == ["a", "b"] and model.head_calls == 0
    torch.testing.assert_close(out["a"], direct_a, rtol=0, atol=0)
    torch.testing.assert_close(out["b"], direct_b, rtol=0, atol=0)
    torch.testing.assert_close(only_b, direct_b, rtol=0, atol=0)
    assert not model.b._forward_hooks and not model.a._forward_hooks
    model(x)
    assert model.head_calls == 1


def test_order_and_refusals() -> None:
    """call_order is the run order; unknown, twice-run and unused-outside-block are refused."""
    model = _Counting().eval()
    assert call_order(model, ["b", "relu", "a"], 8) == ["a", "relu", "b"]
    with pytest.raises(ModelError):
        Truncated(model, ["nope"])
    with pytest.raises(ModelError, match="ran twice"):
        call_order(model, ["shared", "head"], 8)
    with pytest.raises(RuntimeError):
        Truncated(model, ["a"])(torch.zeros(1, 3, 8, 8))
