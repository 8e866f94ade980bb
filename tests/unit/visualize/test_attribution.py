"""Tests for ray_dissect.visualize.attribution against captum, autograd and hand values."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerGradCam, Saliency
from torch import nn
from torchvision.models import ResNet

from ray_dissect.errors import SpecError
from ray_dissect.visualize.attribution import (
    METHODS,
    AttributionRunner,
    crop,
    feature_maps,
    layer_maps,
    overlay,
    to_display,
    weights,
)

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
BASE = ("saliency", "guided_backprop", "cam", "gradcam", "guided_gradcam")
"""The methods with a captum counterpart of the same name here (the others: test_methods)."""


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def resnet() -> ResNet:
    """A seeded torchvision ResNet-18 (no weights), in eval mode."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    """Smooth seeded (n, 3, size, size) float32 images."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, size // 8, size // 8, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _close(got: torch.Tensor, want: torch.Tensor, msg: str = "") -> None:
    """float32 tolerance (the maps come from the same operations in a different order)."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7, msg=msg or None)


def _up(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


def _captum_reference(model: nn.Module, layer: nn.Module, x: torch.Tensor,
                      t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every gradient map computed directly with captum (per-sample targets t)."""
    size = (x.shape[2], x.shape[3])
    sal = Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=True).amax(1)
    gb = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t).abs().amax(1)
    gc = _up(LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True), size)
    ggc = GuidedGradCam(model, layer).attribute(x.clone().requires_grad_(), target=t,
                                                interpolate_mode="bilinear").abs().amax(1)
    return {"saliency": sal, "guided_backprop": gb, "gradcam": gc, "guided_gradcam": ggc}


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not m._backward_pre_hooks for m in model.modules())


def _proportional(low: dict[str, torch.Tensor]) -> torch.Tensor:
    """Asserts gradcam = s_b * relu(cam) per image with s_b > 0; returns s (B,)."""
    c, g = low["cam"].relu().flatten(1).double(), low["gradcam"].flatten(1).double()
    assert (g > 0).any(1).all(), "degenerate test: a Grad-CAM map is all zero"
    s = (g * c).sum(1) / (c * c).sum(1)
    assert (s > 0).all()
    torch.testing.assert_close(g, s[:, None] * c, rtol=1e-4, atol=1e-6 * float(g.max()))
    return s


class _SmallNet(nn.Module):
    """conv -> BN -> ReLU -> conv -> ReLU -> GAP -> linear, with ReLU modules (guided backprop)."""

    def __init__(self, outputs: int = 4) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1, self.bn1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


class _RobotNet(nn.Module):
    """The journey seed's SimpleCNN shape, shrunk: convs, maxpools, flatten, linear, sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc = nn.Linear(4 * 4 * 5, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.features(x).flatten(1)))


# --------------------------------------------------------------------------- captum equality


def test_resnet_maps_equal_captum_with_per_sample_targets(resnet: ResNet) -> None:
    """On ResNet-18 every gradient map equals captum's own output with per-sample targets."""
    x, t = _images(2, 64), torch.tensor([3, 7])
    ours = AttributionRunner(resnet, "layer4", "fc").attribute(x, BASE, t)
    ref = _captum_reference(resnet, resnet.layer4, x, t)
    for name, want in ref.items():
        assert ours[name].shape == (2, 64, 64) and ours[name].dtype == torch.float32
        assert want.abs().amax((1, 2)).min() > 0, name
        _close(ours[name], want, name)
    body = nn.Sequential(*list(resnet.children())[:-2])
    with torch.no_grad():
        cam = torch.einsum("bc,bchw->bhw", resnet.fc.weight[t], body(x))
    _close(ours["cam"], _up(cam[:, None], (64, 64)))


def test_efficientnet_maps_equal_captum(effnet: Any) -> None:
    """On the demo model EfficientNet-Lite0 saliency and Grad-CAM equal captum's and the CAM
    reference (guided backprop: test_guided, since captum's skips its ReLU6 units)."""
    x = _images(2, 96, seed=1)
    with torch.no_grad():
        t = effnet(x).argmax(1)
    assert t[0] != t[1], "the test needs two different predicted classes"
    ours = AttributionRunner(effnet, "_conv_head").attribute(x, ["saliency", "gradcam"])
    want = _captum_reference(effnet, effnet._conv_head, x, t)
    for name in ("saliency", "gradcam"):
        _close(ours[name], want[name], name)
    cam = AttributionRunner(effnet, "_avg_pooling", "_fc", layer_input=True).attribute(
        x, ["cam"], [5, 900])["cam"]
    with torch.no_grad():
        feats = effnet.extract_features(x)
        want = torch.einsum("bc,bchw->bhw", effnet._fc.weight[torch.tensor([5, 900])], feats)
    _close(cam, _up(want[:, None], (96, 96)))


def test_cam_is_positive_multiple_of_gradcam(resnet: ResNet, effnet: Any) -> None:
    """On conv -> GAP -> linear, Grad-CAM = ReLU(CAM) / (h w) per image, on two models."""
    low = AttributionRunner(resnet, "layer4", "fc").attribute(
        _images(2, 64), ["cam", "gradcam"], [3, 7], upsample=False)
    assert low["cam"].shape == (2, 2, 2)
    torch.testing.assert_close(_proportional(low), torch.full((2,), 1 / 4, dtype=torch.float64),
                               rtol=1e-5, atol=0)  # s comes from float32 maps
    low = AttributionRunner(effnet, "_avg_pooling", "_fc", layer_input=True).attribute(
        _images(2, 96, seed=1), ["cam", "gradcam"], upsample=False)
    torch.testing.assert_close(_proportional(low), torch.full((2,), 1 / 9, dtype=torch.float64),
                               rtol=1e-5, atol=0)


# --------------------------------------------------------------------------- targets


def test_regression_target_is_gradient_of_output_sum() -> None:
    """target='regression' gives |d(sum of outputs)/dx| by plain autograd, and CAM's row sum."""
    robot = _RobotNet().eval()
    x = torch.randn(2, 3, 16, 20, generator=torch.Generator().manual_seed(5))
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(robot(leaf).sum(), leaf)
    ours = AttributionRunner(robot).attribute(x, ["saliency"], "regression")["saliency"]
    assert float(grad.abs().max()) > 0
    _close(ours, grad.abs().amax(1))
    net, x = _SmallNet().eval(), _images(2, 16, seed=6)
    maps = layer_maps(net, "relu2", x)
    cam = AttributionRunner(net, "relu2", "fc").attribute(x, ["cam"], "regression",
                                                          upsample=False)["cam"]
    _close(cam, torch.einsum("c,bchw->bhw", net.fc.weight.sum(0), maps))


def test_batch_equals_single_image_calls(resnet: ResNet, effnet: Any) -> None:
    """A batch of two with different targets equals two single-image calls (no item-0 bug)."""
    cases = [(AttributionRunner(resnet, "layer4", "fc"), _images(2, 64, seed=7), [2, 9]),
             (AttributionRunner(effnet, "_conv_head"), _images(2, 96, seed=1), None)]
    for run, x, classes in cases:
        methods = [m for m in METHODS if m != "smoothgrad"] if classes else (
            "saliency", "gradcam", "guided_gradcam")
        both = run.attribute(x, methods, classes or "predicted")
        for i in range(2):
            one = run.attribute(x[i:i + 1], methods, classes[i] if classes else "predicted")
            for name in methods:
                torch.testing.assert_close(both[name][i:i + 1], one[name], rtol=1e-4,
                                           atol=1e-6, msg=f"{classes} {name} {i}")
        other = run.attribute(x, ["gradcam"], [7, 7])["gradcam"]
        assert not torch.allclose(both["gradcam"][1], other[1])


# --------------------------------------------------------------------------- model hygiene


def test_guided_backprop_is_not_deconvnet_and_model_is_unchanged() -> None:
    """Guided backprop equals captum's, differs from DeconvNet; no hooks or state change left."""
    net, x, t = _SmallNet().train(), _images(2, 16, seed=8), torch.tensor([0, 3])
    before_state = {k: v.clone() for k, v in net.state_dict().items()}
    ours = AttributionRunner(net, "relu2", "fc").attribute(x, METHODS, t)
    assert set(ours) == set(METHODS)
    assert not net.training and not any(m.training for m in net.modules())
    plain = x.clone().requires_grad_()
    guided = GuidedBackprop(net).attribute(plain, target=t).abs().amax(1)
    deconv = Deconvolution(net).attribute(x.clone().requires_grad_(), target=t).abs().amax(1)
    _close(ours["guided_backprop"], guided)
    assert not torch.allclose(ours["guided_backprop"], deconv, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(ours["guided_backprop"], ours["saliency"], rtol=1e-3, atol=1e-6)
    assert _no_hooks(net) and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, before_state[k]) for k, v in net.state_dict().items())
    with torch.no_grad():
        first = net(x)
    AttributionRunner(net).attribute(x, ["guided_backprop"], t)
    with torch.no_grad():
        assert torch.equal(net(x), first)
    assert not x.requires_grad


def test_hooks_removed_when_the_model_raises() -> None:
    """Hooks are removed when the forward raises in the probe and inside guided backprop."""

    class Boom(_SmallNet):
        mode = "probe"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.mode == "probe" or (self.mode == "grad" and x.requires_grad):
                self.relu1(x)
                raise RuntimeError("boom")
            return super().forward(x)

    net, x = Boom().eval(), _images(1, 16)
    with pytest.raises(RuntimeError, match="boom"):
        AttributionRunner(net, "relu1", "fc").attribute(x, ["cam"], 0)
    assert _no_hooks(net)
    net.mode = "grad"
    with pytest.raises(RuntimeError, match="boom"):
        AttributionRunner(net, "relu1", "fc").attribute(x, ["guided_backprop"], 0)
    assert _no_hooks(net)


# --------------------------------------------------------------------------- display helpers


def test_crop_on_hand_made_map() -> None:
    """Threshold 0.3 on a hand-made map gives the hand-computed box, mask and crop."""
    heat = np.zeros((6, 8))
    heat[1, 2], heat[3, 5], heat[4, 3], heat[0, 7] = 10.0, 3.0, 2.9, 2.0
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    got = crop(torch.tensor(heat), image, threshold=0.3)
    want_mask = np.zeros((6, 8), bool)
    want_mask[1, 2] = want_mask[3, 5] = True
    assert got.box == (1, 2, 4, 6)
    np.testing.assert_array_equal(got.mask, want_mask)
    np.testing.assert_array_equal(got.image, image[1:4, 2:6])
    assert crop(heat, image, threshold=0.0).box == (0, 0, 6, 8)
    flat = crop(np.full((6, 8), 5.0), image)
    assert flat.box is None and flat.image.shape == (0, 0, 3) and not flat.mask.any()


def test_to_display_and_overlay_hand_values() -> None:
    """to_display min-max scales per image; overlay blends jet on the image and renormalises."""
    maps = np.array([[[0.0, 1.0], [2.0, 4.0]], [[7.0, 7.0], [7.0, 7.0]]])
    np.testing.assert_array_equal(to_display(maps), [[[0, 64], [128, 255]], [[0] * 2] * 2])
    image = np.full((1, 2, 3), 102, np.uint8)
    heat = np.array([[0.0, 1.0]])
    blend = 0.5 * np.array([[[0.0, 0.0, 0.5], [0.5, 0.0, 0.0]]]) + 0.5 * 102 / 255
    np.testing.assert_array_equal(overlay(image, heat), np.rint(255 * blend / blend.max()))


def test_feature_maps_and_weights_of_hand_weighted_conv() -> None:
    """feature_maps and weights give the hand-computed shapes and grey levels."""
    conv = nn.Conv2d(3, 2, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -2.0]])[:, :, None, None])
    model = nn.Sequential(conv, nn.Flatten())
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    x[0, 2] = torch.tensor([[1.0, 1.0], [1.0, 3.0]])
    torch.testing.assert_close(layer_maps(model, "0", x)[0],
                               torch.stack([x[0, 0], -2 * x[0, 2]]))
    np.testing.assert_array_equal(feature_maps(model, "0", x),
                                  [[[[0, 64], [128, 255]], [[255, 255], [255, 0]]]])
    conv2 = nn.Conv2d(3, 2, kernel_size=2, bias=False)
    with torch.no_grad():
        conv2.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2))
    got = weights(nn.Sequential(nn.Identity(), conv2, conv))
    assert got.shape == (2, 2, 2, 3) and got.dtype == np.uint8
    scaled = np.rint(255 * np.arange(12).reshape(3, 2, 2) / 11)
    for o in range(2):
        np.testing.assert_array_equal(got[o], np.moveaxis(scaled, 0, -1))
    assert weights(model, "0").shape == (2, 1, 1, 3)


# --------------------------------------------------------------------------- errors


def test_bad_specs_raise_spec_error(resnet: ResNet) -> None:
    """Bad method, layer, head, reused layer, target or cam model give clear SpecErrors."""
    x = _images(1, 32)
    with pytest.raises(SpecError, match="guided_backprop"):
        AttributionRunner(resnet, "layer4").attribute(x, ["guided"])
    with pytest.raises(SpecError, match="'layer4'"):
        AttributionRunner(resnet, "layer5")
    with pytest.raises(SpecError, match="head"):
        AttributionRunner(resnet, "layer4").attribute(x, ["cam"])
    with pytest.raises(SpecError, match="need a layer"):
        AttributionRunner(resnet).attribute(x, ["gradcam"])
    with pytest.raises(SpecError, match=r"nn\.Linear"):
        AttributionRunner(resnet, "layer4", "avgpool")
    with pytest.raises(SpecError, match="once per forward"):
        AttributionRunner(resnet, "layer4.1.relu").attribute(x, ["gradcam"])
    with pytest.raises(SpecError, match="out of range"):
        AttributionRunner(resnet).attribute(x, ["saliency"], 1000)
    with pytest.raises(SpecError, match="global average pool"):
        AttributionRunner(_RobotNet(), "features.3", "fc").attribute(
            torch.zeros(1, 3, 16, 20), ["cam"], 0)
    with pytest.raises(SpecError, match="global average pool"):
        AttributionRunner(resnet, "layer3", "fc").attribute(x, ["cam"], 0)
    with pytest.raises(SpecError, match="threshold"):
        crop(np.zeros((2, 2)), np.zeros((2, 2)), threshold=1.5)
