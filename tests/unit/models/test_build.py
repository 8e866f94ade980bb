"""Models: factories, safe checkpoints, layer discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ray_dissect.errors import LayerNotFoundError, ModelError, SpecError, UserCodeError
from ray_dissect.models.build import (
    build_model,
    check_layers,
    expand_layers,
    layer_shapes,
    probe_layers,
)
from ray_dissect.spec import CheckpointWeights, ModelSpec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")


def test_factory_file_and_checkpoint_round_trip(tmp_path: Path) -> None:
    """A factory-built model loads a state dict (weights_only) saved from another one."""
    model = build_model(ModelSpec(factory=f"{PLANTED}:color_detectors"))
    state = {f"module.{k}": v * 2 for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "ck.pt")
    loaded = build_model(ModelSpec(factory=f"{PLANTED}:color_detectors",
                                   weights=CheckpointWeights(checkpoint=tmp_path / "ck.pt")))
    assert torch.equal(loaded.conv.weight, model.conv.weight * 2)


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    """A pickle that is not plain tensors fails to load under weights_only=True."""
    torch.save({"state_dict": {"x": ModelSpec}}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="weights_only=True"):
        build_model(ModelSpec(factory=f"{PLANTED}:color_detectors",
                              weights=CheckpointWeights(checkpoint=tmp_path / "evil.pt")))


def test_mismatched_checkpoint_is_a_model_error(tmp_path: Path) -> None:
    """Wrong keys give a one-line ModelError."""
    torch.save({"other": torch.zeros(1)}, tmp_path / "ck.pt")
    with pytest.raises(ModelError, match="does not fit"):
        build_model(ModelSpec(factory=f"{PLANTED}:color_detectors",
                              weights=CheckpointWeights(checkpoint=tmp_path / "ck.pt")))


def test_factory_errors(tmp_path: Path) -> None:
    """Missing files, missing functions and raising factories are reported as such."""
    with pytest.raises(ModelError, match="not found"):
        build_model(ModelSpec(factory=f"{tmp_path}/nope.py:f"))
    with pytest.raises(ModelError, match="no callable"):
        build_model(ModelSpec(factory=f"{PLANTED}:nothing_here"))
    (tmp_path / "boom.py").write_text("def f():\n    raise RuntimeError('boom')\n")
    with pytest.raises(UserCodeError, match="boom"):
        build_model(ModelSpec(factory=f"{tmp_path}/boom.py:f"))


def test_layers_and_shapes() -> None:
    """layer_shapes lists modules with output shapes; unknown layers hint at the command."""
    model = build_model(ModelSpec(factory="ray_dissect.zoo:efficientnet_lite0",
                                  kwargs={"pretrained": False}))
    shapes = dict(layer_shapes(model, 224))
    assert shapes["_bn1"] == (1280, 7, 7)
    with pytest.raises(LayerNotFoundError, match="ray-dissect layers"):
        check_layers(model, ["_bn1", "_conv_tail"])


def _resnet18():
    return build_model(ModelSpec(name="resnet18"))


def test_layer_patterns_expand_to_module_names_in_order() -> None:
    """Names stay, '*' stays within a dotted part, '**' crosses parts, 'type:' picks classes,
    and a module selected twice is kept once."""
    net = _resnet18()
    assert expand_layers(net, ["layer4.*"]) == ("layer4.0", "layer4.1")
    deep = expand_layers(net, ["layer4.1.**"])
    assert "layer4.1.conv1" in deep and "layer4.1.downsample" not in deep
    relus = tuple(n for n, m in net.named_modules() if type(m).__name__ == "ReLU")
    assert expand_layers(net, ["type:ReLU"]) == relus and relus[0] == "relu"
    assert expand_layers(net, ["avgpool", "layer4.?", "avgpool"]) == (
        "avgpool", "layer4.0", "layer4.1")


def test_a_pattern_that_selects_nothing_is_refused() -> None:
    """An empty selection names the pattern and what patterns look like."""
    with pytest.raises(LayerNotFoundError, match=r"'type:Relu' selects no module.*glob"):
        expand_layers(_resnet18(), ["type:Relu"])


def test_probe_counts_calls_of_shared_modules() -> None:
    """ResNet's block ReLU runs twice per forward; the block itself once."""
    calls = {n: c for n, _, c in probe_layers(_resnet18(), 32, ["layer1.0.relu", "layer1.0"])}
    assert calls == {"layer1.0.relu": 2, "layer1.0": 1}


def test_random_init_is_the_same_on_every_build_and_leaves_the_callers_generator() -> None:
    """Two builds of a ``weights: none`` model agree exactly, another ``init_seed`` differs,
    and the caller's torch generator state is unchanged by building."""
    import torch

    from ray_dissect.models.build import build_model
    from ray_dissect.spec import ModelSpec

    spec = ModelSpec(name="resnet18")
    state = torch.random.get_rng_state()
    first, second = build_model(spec), build_model(spec)
    assert torch.equal(torch.random.get_rng_state(), state)
    other = build_model(ModelSpec(name="resnet18", init_seed=1))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.conv1.weight, other.conv1.weight)


def test_unknown_torchvision_name_is_a_spec_error_naming_the_field() -> None:
    """The spec's schema accepts any name; building it names the field and close models."""
    spec = ModelSpec(name="resnet1000")
    with pytest.raises(SpecError) as err:
        build_model(spec)
    message = str(err.value)
    assert "field 'model.name'" in message and "resnet1000" in message
    assert "resnet18" in message and err.value.exit_code == 2
