"""Grad-CAM (and LayerCAM, Grad-CAM++, Score-CAM) on a ViT encoder layer: its (B, 1 + g*g, C)
tokens are read as (B, C, g, g) maps, as extraction reads them, and the maps equal a Grad-CAM
written here with torch autograd on the reshaped tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.planted import tiny_vit
from torch import nn

from ray_dissect.errors import SpecError
from ray_dissect.spec import LayerLayout
from ray_dissect.visualize.attribution import AttributionRunner, layer_maps

LAYER = "encoder.layers.encoder_layer_0"  # the last one: patch tokens get no gradient


def _tokens_and_grads(vit: nn.Module, x: torch.Tensor, targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's tokens (B, 17, 16) and d(sum of target logits)/d tokens, by hand."""
    seen: list[torch.Tensor] = []
    hook = vit.get_submodule(LAYER).register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        logits = vit(x)
    finally:
        hook.remove()
    score = logits[torch.arange(len(x)), targets].sum()
    (grads,) = torch.autograd.grad(score, seen[0])
    return seen[0].detach(), grads


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, 17, C) -> (B, C, 4, 4): drop the class token, patches row-major."""
    b, _, c = tokens.shape
    return tokens[:, 1:].reshape(b, 4, 4, c).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """tiny_vit, 3 images of 32 px, their predicted classes, hand maps and grads."""
    vit = tiny_vit()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = vit(x).argmax(1)
    return vit, x, targets, targets


def test_gradcam_on_vit_tokens_is_the_hand_written_gradcam(
        case: tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """relu(sum_c mean_hw(dS/dA_c) A_c) on the 4 x 4 grid, low and upsampled (bilinear,
    align_corners=False) to 32 x 32; not constant (the map says something)."""
    vit, x, targets, _ = case
    tokens, grads = _tokens_and_grads(vit, x, targets)
    maps, g = _grid(tokens), _grid(grads)
    want = F.relu((g.mean((2, 3), keepdim=True) * maps).sum(1))
    layercam = F.relu((F.relu(g) * maps).sum(1))
    run = AttributionRunner(vit, LAYER)
    low = run.attribute(x, ["gradcam", "layercam"], upsample=False)
    torch.testing.assert_close(low["gradcam"], want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(low["layercam"], layercam, rtol=1e-4, atol=1e-6)
    assert float(want.amax() - want.amin()) > 0
    up = run.attribute(x, ["gradcam"])["gradcam"]
    torch.testing.assert_close(
        up, F.interpolate(want[:, None], size=(32, 32), mode="bilinear",
                          align_corners=False)[:, 0], rtol=1e-4, atol=1e-6)


def test_declared_layout_and_other_cam_methods_on_vit(
        case: tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """A declared tokens layout (prefix 1, 4 x 4) gives the same Grad-CAM as the inferred
    one; Grad-CAM++ and Score-CAM run on the grid; layer_maps is the reshaped tokens; cam
    (no GAP head on a ViT) is refused."""
    vit, x, targets, _ = case
    layout = LayerLayout(kind="tokens", prefix=1, grid=(4, 4))
    inferred = AttributionRunner(vit, LAYER).attribute(x, ["gradcam"], upsample=False)
    declared = AttributionRunner(vit, LAYER, layout=layout).attribute(
        x, ["gradcam", "gradcam_pp", "scorecam"], upsample=False)
    torch.testing.assert_close(declared["gradcam"], inferred["gradcam"])
    assert declared["gradcam_pp"].shape == declared["scorecam"].shape == (3, 4, 4)
    tokens, _ = _tokens_and_grads(vit, x, targets)
    torch.testing.assert_close(layer_maps(vit, LAYER, x), _grid(tokens))
    with pytest.raises(SpecError):
        AttributionRunner(vit, LAYER, "heads.head").attribute(x, ["cam"])
