"""Models: factories, safe checkpoints, layer discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ray_dissect.errors import LayerNotFoundError, ModelError, UserCodeError
from ray_dissect.models.build import build_model, check_layers, layer_shapes
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
