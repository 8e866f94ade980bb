"""The attribution methods beyond saliency and Grad-CAM (design visual.md section 2).

Input-space methods (captum 0.9), each ``(scorer, images, targets, params) -> (B, H, W)
float32``: ``integrated_gradients`` (``IntegratedGradients``, all-zero baseline, i.e. the
normalisation mean image), ``smoothgrad`` (``NoiseTunnel(Saliency)``, ``nt_type="smoothgrad"``,
seeded noise), ``input_x_gradient`` (``InputXGradient``) and ``occlusion`` (``Occlusion``, a
zero window over all channels). The signed methods (integrated gradients, input x gradient,
occlusion) are summed over the colour channels (occlusion's channels are equal, so the sum is
``C`` times one of them and we take the mean instead); smoothgrad, like saliency, is the max
over channels of the mean absolute gradient.

Layer methods on the Grad-CAM plumbing (the layer's maps A (B, K, h, w) and their gradients
G = d score / d A), each returning the (B, h, w) map before upsampling:

- ``gradcam_pp`` (Chattopadhay et al. 2018, with the exponential score as pytorch-grad-cam):
  a = G^2 / (2 G^2 + sum_ij(A) G^3) (0 where G = 0), w_k = sum_ij a relu(G),
  map = relu(sum_k w_k A_k);
- ``layercam`` (Jiang et al. 2021): map = relu(sum_k relu(G_k) A_k), element-wise;
- ``scorecam`` (Wang et al. 2020): each channel upsampled to H x W and min-max scaled to
  [0, 1] masks the input; s_k = softmax(model(x * M_k))[target] (the summed outputs for the
  regression target); w = softmax_k(s); map = relu(sum_k w_k A_k). K forwards per image, in
  batches of ``params.scorecam_batch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ray_dissect.errors import SpecError

_EPS = 1e-7


@dataclass(frozen=True)
class MethodParams:
    """Settings of the methods that have any (the spec's ``analyses.attribution`` fields).

    Attributes:
        ig_steps: integrated-gradients steps (captum ``n_steps``, Gauss-Legendre).
        smoothgrad_samples: noisy copies per image (captum ``nt_samples``).
        smoothgrad_stdev: the noise's standard deviation in network-input units.
        occlusion_window: side of the square occluding window, pixels.
        occlusion_stride: window step, pixels.
        scorecam_batch: masked copies per Score-CAM forward.
        seed: seeds the smoothgrad noise.
    """

    ig_steps: int = 32
    smoothgrad_samples: int = 16
    smoothgrad_stdev: float = 0.5
    occlusion_window: int = 16
    occlusion_stride: int = 8
    scorecam_batch: int = 64
    seed: int = 0


Scorer = nn.Module


def integrated_gradients(scorer: Scorer, images: Tensor, targets: Tensor,
                         params: MethodParams) -> Tensor:
    """(B, H, W): captum IntegratedGradients from the zero baseline, summed over channels."""
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(scorer).attribute(images, baselines=0.0, target=targets,
                                                 n_steps=params.ig_steps)
    return attr.detach().sum(1).float()


def smoothgrad(scorer: Scorer, images: Tensor, targets: Tensor, params: MethodParams) -> Tensor:
    """(B, H, W): max over channels of captum NoiseTunnel(Saliency) (seeded noise)."""
    from captum.attr import NoiseTunnel, Saliency

    devices = [images.device.index or 0] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(params.seed)
        attr = NoiseTunnel(Saliency(scorer)).attribute(
            images.detach().requires_grad_(True), nt_type="smoothgrad",
            nt_samples=params.smoothgrad_samples, stdevs=params.smoothgrad_stdev,
            target=targets)
    return attr.detach().abs().amax(1).float()


def input_x_gradient(scorer: Scorer, images: Tensor, targets: Tensor,
                     params: MethodParams) -> Tensor:
    """(B, H, W): captum InputXGradient, summed over channels."""
    from captum.attr import InputXGradient

    attr = InputXGradient(scorer).attribute(images.detach().requires_grad_(True),
                                            target=targets)
    return attr.detach().sum(1).float()


def occlusion(scorer: Scorer, images: Tensor, targets: Tensor, params: MethodParams) -> Tensor:
    """(B, H, W): captum Occlusion with a zero window over every channel (channel mean)."""
    from captum.attr import Occlusion

    c, side, step = images.shape[1], params.occlusion_window, params.occlusion_stride
    if side > min(images.shape[2], images.shape[3]):
        raise SpecError("the occlusion window is larger than the image", given=side,
                        expected=f"at most {min(images.shape[2], images.shape[3])} px",
                        hint="lower analyses.attribution.occlusion_window")
    with torch.no_grad():
        attr = Occlusion(scorer).attribute(images, sliding_window_shapes=(c, side, side),
                                           strides=(c, step, step), baselines=0.0,
                                           target=targets, perturbations_per_eval=8)
    return attr.detach().mean(1).float()


INPUT_METHODS: dict[str, Callable[[Scorer, Tensor, Tensor, MethodParams], Tensor]] = {
    "integrated_gradients": integrated_gradients, "smoothgrad": smoothgrad,
    "input_x_gradient": input_x_gradient, "occlusion": occlusion}


def gradcam_pp(maps: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM++ from (B, K, h, w) maps and gradients: (B, h, w) float32."""
    g2 = grads.pow(2)
    g3 = g2 * grads
    denom = 2 * g2 + maps.sum((2, 3), keepdim=True) * g3
    alpha = torch.where(grads != 0, g2 / (denom + _EPS), torch.zeros_like(g2))
    weights = (alpha * grads.clamp(min=0)).sum((2, 3))
    return torch.einsum("bk,bkhw->bhw", weights, maps).clamp(min=0).float()


def layercam(maps: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM from (B, K, h, w) maps and gradients: (B, h, w) float32."""
    return (grads.clamp(min=0) * maps).sum(1).clamp(min=0).float()


def _unit_masks(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(K, h, w) maps of one image -> (K, 1, H, W) bilinear upsampled, each min-max to [0, 1]."""
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    low = up.amin((2, 3), keepdim=True)
    span = up.amax((2, 3), keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp(min=1e-12), torch.zeros_like(up))


def scorecam(scorer: Scorer, images: Tensor, maps: Tensor, targets: Tensor,
             params: MethodParams, *, probabilities: bool = True) -> Tensor:
    """Score-CAM: (B, h, w) float32 from the images (B, C, H, W) and the layer's (B, K, h, w)
    maps; ``probabilities`` False scores the masked copies by the raw output (regression)."""
    size = (images.shape[2], images.shape[3])
    out = []
    with torch.no_grad():
        for b in range(images.shape[0]):
            masks = _unit_masks(maps[b].float(), size)
            scores = torch.cat([
                _target_score(scorer(images[b:b + 1] * masks[k0:k0 + params.scorecam_batch]),
                              int(targets[b]), probabilities)
                for k0 in range(0, masks.shape[0], params.scorecam_batch)])
            weights = torch.softmax(scores.double(), 0).to(maps.dtype)
            out.append(torch.einsum("k,khw->hw", weights, maps[b]).clamp(min=0))
    return torch.stack(out).float()


def _target_score(outputs: Tensor, target: int, probabilities: bool) -> Tensor:
    """(N, K) outputs -> (N,) the target's softmax probability (or raw output)."""
    return (torch.softmax(outputs.double(), 1) if probabilities else outputs)[:, target]


def unit_attribution(model: nn.Module, layer: nn.Module, images: Tensor, unit: int,
                     method: str = "gradient", steps: int = 16) -> Tensor:
    """Which pixels drive one unit: (B, H, W) float32 maps of (B, C, H, W) images.

    The unit's score is its spatial mean activation at ``layer`` (the layer's (B, K, h, w)
    output, or (B, K)); ``gradient``: captum ``NeuronGradient``, max over channels of the
    absolute gradient; ``integrated_gradients``: captum ``NeuronIntegratedGradients`` from the
    zero baseline with ``steps`` steps, summed over channels.
    """
    from captum.attr import NeuronGradient, NeuronIntegratedGradients

    def selector(out: Tensor | tuple[Tensor, ...]) -> Tensor:
        maps = out[0] if isinstance(out, tuple) else out
        return maps[:, unit].flatten(1).mean(1)

    x = images.detach().requires_grad_(True)
    if method == "gradient":
        grads = NeuronGradient(model, layer).attribute(x, neuron_selector=selector)
        return grads.detach().abs().amax(1).float()
    attr = NeuronIntegratedGradients(model, layer).attribute(
        x, neuron_selector=selector, baselines=torch.zeros_like(images), n_steps=steps)
    return attr.detach().sum(1).float()
