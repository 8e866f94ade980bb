"""The added attribution methods: captum's own output for integrated gradients, SmoothGrad,
input x gradient and occlusion; dense loops over the papers' formulas for Grad-CAM++,
Score-CAM and LayerCAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
from torch import nn

from ray_dissect.errors import SpecError
from ray_dissect.visualize.attribution import AttributionRunner
from ray_dissect.visualize.methods import MethodParams

PARAMS = MethodParams(ig_steps=12, smoothgrad_samples=5, smoothgrad_stdev=0.3,
                      occlusion_window=4, occlusion_stride=2, scorecam_batch=3, seed=7)


class _Net(nn.Module):
    """features (conv -> ReLU -> conv -> ReLU) -> GAP -> fc, seeded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(21)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(5, 7, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def case() -> tuple[_Net, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The net, 3 images of 12 px, targets and every method's maps from one runner call."""
    net = _Net().eval()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([1, 0, 3])
    methods = ["integrated_gradients", "smoothgrad", "input_x_gradient", "occlusion",
               "gradcam_pp", "scorecam", "layercam"]
    low = AttributionRunner(net, "features", params=PARAMS).attribute(x, methods, t,
                                                                      upsample=False)
    return net, x, t, low


def test_captum_methods_equal_captum(case: tuple) -> None:
    """Each input-space method equals captum's attribution reduced over channels."""
    net, x, t, got = case
    leaf = x.clone().requires_grad_()
    ig = IntegratedGradients(net).attribute(x, baselines=0.0, target=t, n_steps=12).sum(1)
    ixg = InputXGradient(net).attribute(leaf, target=t).sum(1)
    occ = Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2),
                                   baselines=0.0, target=t)
    torch.manual_seed(7)
    sg = NoiseTunnel(Saliency(net)).attribute(x.clone().requires_grad_(), nt_type="smoothgrad",
                                              nt_samples=5, stdevs=0.3, target=t)
    want = {"integrated_gradients": ig, "input_x_gradient": ixg, "occlusion": occ[:, 0],
            "smoothgrad": sg.abs().amax(1)}
    for name, ref in want.items():
        ref = ref.detach()
        assert float(ref.abs().max()) > 0, name
        torch.testing.assert_close(got[name], ref.float(), rtol=1e-5, atol=1e-7,
                                   msg=name)
    assert torch.equal(occ[:, 0], occ[:, 2])


def _layer(net: _Net, x: torch.Tensor, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A (B, K, h, w) and dy_t/dA computed here by splitting the net at ``features``."""
    a = net.features(x).detach().requires_grad_()
    score = net.fc(a.mean((2, 3))).gather(1, t[:, None]).sum()
    (g,) = torch.autograd.grad(score, a)
    return a.detach().double().numpy(), g.double().numpy()


def test_gradcam_pp_and_layercam_equal_dense_formulas(case: tuple) -> None:
    """Grad-CAM++: a = g^2 / (2 g^2 + sum(A) g^3), w_k = sum a relu(g), relu(sum w A);
    LayerCAM: relu(sum_k relu(g) A); both looped element by element."""
    net, x, t, got = case
    a, g = _layer(net, x, t)
    b_n, k_n, h, w = a.shape
    pp, lc = np.zeros((b_n, h, w)), np.zeros((b_n, h, w))
    for b in range(b_n):
        for k in range(k_n):
            total, weight = a[b, k].sum(), 0.0
            for i in range(h):
                for j in range(w):
                    gg = g[b, k, i, j]
                    if gg != 0:
                        weight += gg**2 / (2 * gg**2 + total * gg**3 + 1e-7) * max(gg, 0.0)
                    lc[b, i, j] += max(gg, 0.0) * a[b, k, i, j]
            pp[b] += weight * a[b, k]
    for name, ref in (("gradcam_pp", np.maximum(pp, 0)), ("layercam", np.maximum(lc, 0))):
        assert ref.max() > 0, name
        np.testing.assert_allclose(got[name].numpy(), ref, rtol=1e-4, atol=1e-7 * ref.max())


def test_scorecam_equals_dense_formula(case: tuple) -> None:
    """Score-CAM: each channel upsampled and min-max scaled masks the input; the target's
    softmax scores, softmaxed over channels, weight the maps; ReLU."""
    net, x, t, got = case
    a, _ = _layer(net, x, t)
    want = np.zeros(a.shape[0:1] + a.shape[2:])
    for b in range(a.shape[0]):
        scores = []
        for k in range(a.shape[1]):
            up = F.interpolate(torch.tensor(a[b, k])[None, None], size=(12, 12),
                               mode="bilinear", align_corners=False)[0, 0].numpy()
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            with torch.no_grad():
                out = net(x[b:b + 1] * torch.tensor(mask, dtype=torch.float32))[0].double()
            scores.append(float(torch.softmax(out, 0)[t[b]]))
        weights = np.exp(scores) / np.exp(scores).sum()
        want[b] = np.maximum(np.tensordot(weights, a[b], axes=1), 0)
    assert want.max() > 0
    np.testing.assert_allclose(got["scorecam"].numpy(), want, rtol=1e-4, atol=1e-6)


def test_upsampled_layer_methods_and_occlusion_window_check(case: tuple) -> None:
    """Upsampled maps are the bilinear upsampling of the low ones; an occluder larger than
    the image is refused."""
    net, x, t, _ = case
    up = AttributionRunner(net, "features", params=PARAMS).attribute(x, ["layercam"], t)
    assert up["layercam"].shape == (3, 12, 12)
    big = MethodParams(occlusion_window=13)
    with pytest.raises(SpecError, match="occlusion window"):
        AttributionRunner(net, params=big).attribute(x, ["occlusion"], t)
