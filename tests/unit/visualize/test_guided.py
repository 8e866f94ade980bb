"""Guided backprop at every rectifier (nn.ReLU6, F.relu, hardtanh, clamp) against a
hand-written backward pass, and on the demo model against captum on an equivalent net."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop
from torch import nn
from torch.nn.grad import conv2d_input

from ray_dissect.errors import SpecError
from ray_dissect.visualize.attribution import AttributionRunner
from ray_dissect.visualize.guided import GuidedMode, guided_gradients

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")


class _Relu6Net(nn.Module):
    """conv1 -> nn.ReLU6 -> conv2 -> F.relu -> GAP -> fc (a module and a functional rectifier)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv1, self.act1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU6(inplace=True)
        self.conv2, self.fc = nn.Conv2d(6, 5, 3, padding=1), nn.Linear(5, 4)
        with torch.no_grad():
            self.conv1.weight.mul_(8.0)  # so that some inputs pass 6 (the upper clamp matters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z2 = self.conv2(self.act1(self.conv1(x)))
        return self.fc(F.relu(z2).mean((2, 3)))


def _hand_guided(net: _Relu6Net, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The guided backward written out layer by layer: relu(g) * [lo < z < hi] at each
    rectifier, the transposed convolutions and the pooled linear head in between."""
    with torch.no_grad():
        z1 = net.conv1(x)
        z2 = net.conv2(z1.clamp(0, 6))
        h, w = z2.shape[2:]
        g = net.fc.weight[t][:, :, None, None].expand_as(z2) / (h * w)
        g = g.clamp(min=0) * (z2 > 0)
        g = conv2d_input(z1.shape, net.conv2.weight, g, padding=1)
        g = g.clamp(min=0) * ((z1 > 0) & (z1 < 6))
        return conv2d_input(x.shape, net.conv1.weight, g, padding=1)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_relu6_and_functional_relu_net_equals_hand_written_guided_backprop() -> None:
    """On a net with nn.ReLU6 (in place) and F.relu, the guided map is the hand-written one,
    and differs from both the plain gradient and captum's (which sees no nn.ReLU)."""
    net, x, t = _Relu6Net().eval(), _images(3, 12, seed=1), torch.tensor([0, 2, 3])
    with torch.no_grad():
        z1 = net.conv1(x)
    assert bool((z1 > 6).any()) and bool((z1 < 0).any()), "degenerate test: clamp unused"
    want = _hand_guided(net, x, t)
    got = guided_gradients(lambda v: net(v).gather(1, t[:, None])[:, 0], x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    ours = AttributionRunner(net).attribute(x, ["saliency", "guided_backprop"], t)
    torch.testing.assert_close(ours["guided_backprop"], want.abs().amax(1), rtol=1e-5,
                               atol=1e-7)
    assert not torch.allclose(ours["guided_backprop"], ours["saliency"], atol=1e-6)
    captum = GuidedBackprop(net).attribute(x.clone().requires_grad_(), target=t)
    assert not torch.allclose(captum, want, atol=1e-6)


@pytest.mark.parametrize("call, lo, hi", [
    (lambda v: F.hardtanh(v, -0.5, 0.7), -0.5, 0.7),
    (lambda v: torch.clamp(v, min=0.2), 0.2, float("inf")),
    (lambda v: v.clamp(-1.0, 0.3), -1.0, 0.3),
    (lambda v: torch.relu(v), 0.0, float("inf")),
    (lambda v: v.relu(), 0.0, float("inf")),
    (lambda v: F.relu6(v), 0.0, 6.0),
])
def test_each_rectifier_passes_positive_gradients_inside_its_range(call: Any, lo: float,
                                                                   hi: float) -> None:
    """score = sum(c * f(x)) elementwise: the guided gradient is relu(c) * [lo < x < hi]."""
    g = torch.Generator().manual_seed(2)
    x, c = torch.randn(2, 40, generator=g) * 4, torch.randn(2, 40, generator=g)
    got = guided_gradients(lambda v: (c * call(v)).sum(1), x)
    torch.testing.assert_close(got, c.clamp(min=0) * ((x > lo) & (x < hi)))


def test_model_without_rectifier_is_refused_naming_its_activations() -> None:
    """A SiLU/sigmoid net gets a one-line SpecError naming what it calls, not saliency."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(2))
    x = _images(1, 8, seed=3)
    net(x)
    with pytest.raises(SpecError, match=r"needs a rectifier.*silu x1") as err:
        AttributionRunner(net).attribute(x, ["guided_backprop"], 0)
    assert "\n" not in str(err.value)
    assert not torch.overrides._get_current_function_mode_stack()


def test_direct_in_place_rectifier_is_refused() -> None:
    """``x.relu_()`` called directly cannot be rewritten: a SpecError names it."""

    class InPlace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * 2).relu_().sum((1, 2, 3))[:, None]

    with pytest.raises(SpecError, match=r"in-place rectifier.*relu_"):
        AttributionRunner(InPlace()).attribute(_images(1, 4, seed=4), ["guided_backprop"], 0)
    assert not torch.overrides._get_current_function_mode_stack()


def test_guided_mode_counts_module_and_functional_rectifiers() -> None:
    """nn.ReLU, nn.ReLU6, nn.Hardtanh and F.relu calls are all seen."""
    net = nn.Sequential(nn.ReLU(), nn.ReLU6(), nn.Hardtanh())
    with GuidedMode() as mode:
        F.relu(net(torch.randn(3)))
    assert mode.rectifiers == {"relu": 2, "hardtanh": 2}


class _Min6(nn.Module):
    """min(x, 6) with its plain gradient (captum leaves it alone)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(x, torch.full_like(x, 6.0))


def _relu6_as_relu_then_min(model: nn.Module) -> nn.Module:
    """A copy with every nn.ReLU6 replaced by nn.ReLU then min(., 6): the same function, and
    captum's guided rule at the ReLU times the plain [x < 6] gradient is the guided ReLU6
    rule relu(g) * [0 < x < 6]."""
    twin = copy.deepcopy(model)
    for _name, module in list(twin.named_modules()):
        for child, sub in list(module.named_children()):
            if isinstance(sub, nn.ReLU6):
                setattr(module, child, nn.Sequential(nn.ReLU(), _Min6()))
    assert not any(isinstance(m, nn.ReLU6) for m in twin.modules())
    return twin


def test_demo_model_guided_backprop_differs_from_saliency_and_equals_captum_twin(
        effnet: Any) -> None:
    """On EfficientNet-Lite0 (nn.ReLU6 only) guided backprop is not saliency, and equals
    captum's GuidedBackprop on the twin with ReLU6 = ReLU then min(., 6)."""
    x = torch.nn.functional.interpolate(_images(2, 12, seed=5), size=(96, 96), mode="bilinear")
    ours = AttributionRunner(effnet).attribute(x, ["saliency", "guided_backprop"])
    gap = float((ours["guided_backprop"] - ours["saliency"]).abs().max())
    assert gap > 0.1 * float(ours["saliency"].abs().max())
    with torch.no_grad():
        t = effnet(x).argmax(1)
    twin = _relu6_as_relu_then_min(effnet).eval()
    want = GuidedBackprop(twin).attribute(x.clone().requires_grad_(), target=t)
    torch.testing.assert_close(ours["guided_backprop"], want.abs().amax(1), rtol=1e-4,
                               atol=1e-6)
