"""Token and channels-last layers read as (units, h, w) maps, against hand-built layouts."""

from __future__ import annotations

import pytest
import torch

from ray_dissect.errors import ModelError
from ray_dissect.models.build import build_model, probe_layers
from ray_dissect.models.extract import Extractor
from ray_dissect.models.layout import as_maps, edit_in_layout, map_shape
from ray_dissect.spec import LayerLayout, ModelSpec
from ray_dissect.studies.hooks import decisions, unit_zeroer

TOKENS = LayerLayout(kind="tokens")


def _tokens(n: int, prefix: int, gh: int, gw: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (n, C, gh, gw) maps and the (n, prefix + gh*gw, C) token sequence holding them
    row-major after ``prefix`` extra tokens, built with explicit loops."""
    maps = torch.randn(n, c, gh, gw)
    tokens = torch.randn(n, prefix + gh * gw, c)
    for i in range(gh):
        for j in range(gw):
            tokens[:, prefix + i * gw + j, :] = maps[:, :, i, j]
    return maps, tokens


@pytest.mark.parametrize(("prefix", "declared"), [(0, None), (1, None), (5, LayerLayout(
    kind="tokens", prefix=5)), (1, LayerLayout(kind="tokens", grid=(3, 3)))])
def test_square_token_grids(prefix: int, declared: LayerLayout | None) -> None:
    maps, tokens = _tokens(2, prefix, 3, 3, 4)
    assert torch.equal(as_maps("blk", tokens, declared), maps)


def test_declared_rectangular_grid_and_prefix() -> None:
    maps, tokens = _tokens(2, 2, 2, 5, 3)
    layout = LayerLayout(kind="tokens", prefix=2, grid=(2, 5))
    assert torch.equal(as_maps("blk", tokens, layout), maps)
    assert map_shape("blk", tuple(tokens.shape[1:]), layout) == (3, 2, 5)


def test_channels_last_and_plain_outputs() -> None:
    maps = torch.randn(2, 4, 3, 5)
    assert torch.equal(as_maps("s", maps.permute(0, 2, 3, 1).contiguous(),
                               LayerLayout(kind="nhwc")), maps)
    assert as_maps("c", maps) is maps
    assert as_maps("fc", torch.ones(2, 7)).shape == (2, 7, 1, 1)


@pytest.mark.parametrize(("shape", "layout", "words"), [
    ((1, 11, 4), None, "square grid"),
    ((1, 10, 4), LayerLayout(kind="tokens", grid=(2, 2), prefix=1), "prefix + 2 x 2"),
    ((1, 4, 2, 2), LayerLayout(kind="tokens"), "tokens layout"),
    ((1, 2, 3, 4, 5), None, "(n, C[, h, w]) maps"),
])
def test_unreadable_outputs_are_refused_with_the_fix(shape, layout, words) -> None:
    with pytest.raises(ModelError) as err:
        as_maps("blk", torch.zeros(shape), layout)
    assert words in str(err.value) and "model.layouts" in str(err.value)


def test_layout_fields_go_together() -> None:
    with pytest.raises(ValueError, match="only with kind 'tokens'"):
        LayerLayout(kind="nhwc", prefix=1)


def test_an_edit_changes_only_the_patch_tokens() -> None:
    """Zeroing unit 2 of a token layer zeroes channel 2 of every patch token, leaves the class
    token and the other channels as they were, and does not touch the input tensor."""
    _maps, tokens = _tokens(3, 1, 4, 4, 5)
    before = tokens.clone()
    out = edit_in_layout(unit_zeroer([2], 5), "blk")(tokens)
    assert torch.equal(tokens, before)
    want = tokens.clone()
    want[:, 1:, 2] = 0
    assert torch.equal(out, want)


def test_extractor_reads_token_and_nhwc_layers_as_the_conv_maps() -> None:
    """The planted model exposes one set of colour maps as conv output, as ViT-style tokens
    with a class token, and channels last: all three are extracted as the same maps."""
    from fixtures.planted import __file__ as planted

    spec = ModelSpec(factory=f"{planted}:token_colors", preprocess={"size": 16},
                     layouts={"nhwc": {"kind": "nhwc"}})
    images = [torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy() for _ in range(3)]
    out = Extractor(spec, ["detect.pool", "tokens", "nhwc"])(images)
    assert out["detect.pool"].shape == (3, 3, 8, 8)
    assert (out["tokens"] == out["detect.pool"]).all()
    assert (out["nhwc"] == out["detect.pool"]).all()


def test_vit_b_16_encoder_layers_need_no_declaration() -> None:
    """torchvision's vit_b_16 (seeded random weights): an encoder layer's (n, 197, 768) output
    is probed and extracted as (768, 14, 14) maps, the patch tokens of the hooked output."""
    spec = ModelSpec(name="vit_b_16", init_seed=0)
    layer = "encoder.layers.encoder_layer_3"
    (name, shape, calls), = probe_layers(build_model(spec), 224, [layer], layouts={})
    assert (name, shape, calls) == (layer, (768, 14, 14), 1)
    ex = Extractor(spec, [layer])
    seen: list[torch.Tensor] = []
    module = dict(ex.model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
    image = torch.randint(0, 255, (224, 224, 3), dtype=torch.uint8).numpy()
    try:
        maps = ex([image])[layer]
    finally:
        handle.remove()
    patches = seen[0][0, 1:, :].reshape(14, 14, 768).permute(2, 0, 1)
    assert maps.shape == (1, 768, 14, 14) and torch.equal(torch.from_numpy(maps[0]), patches)


def test_zeroing_a_vit_unit_changes_decisions_through_the_class_token() -> None:
    """An ablation hook on a tiny ViT's first encoder layer returns a tensor of the layer's own
    (n, 17, 16) layout, so the rest of the model runs; zeroing every unit changes the logits,
    zeroing none leaves them bit-identical."""
    from fixtures.planted import tiny_vit

    model, x = tiny_vit(), torch.randn(4, 3, 32, 32)
    layer = "encoder.layers.encoder_layer_0"
    base_probs, _ = decisions(model, x)
    none_probs, _ = decisions(model, x, layer, unit_zeroer([], 16), TOKENS)
    all_probs, _ = decisions(model, x, layer, unit_zeroer(range(16), 16))
    assert (none_probs == base_probs).all()
    assert not (all_probs == base_probs).all()
