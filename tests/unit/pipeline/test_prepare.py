"""Checks before and between runs: a dataset without concepts is refused for concept methods;
rerunning after the model's files changed content is refused without --force (naming the
changed stages), and activations and later are redone with it; studies refuse the methods,
datasets and models they cannot use before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ray_dissect.errors import SpecError
from ray_dissect.pipeline.prepare import preflight
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.table import STAGE_NAMES
from ray_dissect.spec import JobSpec, parse_spec

RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
NET = '''
import torch
from torch import nn


def build():
    """A 1x1 convolution weighting the red channel by {w}, then 2x2 average pooling."""
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 1, kernel_size=1))
    net.add_module("pool", nn.AvgPool2d(2))
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([{w}, 0.0, 0.0])[None, :, None, None])
        net.conv.bias.zero_()
    return net
'''
# The four images (tests/conftest.py) make two shards of two images.
ALL = {name: 0 for name in STAGE_NAMES}
REDONE = {**ALL, "activations": 2, "thresholds": 1, "scoring": 1, "top_images": 1}
CHANGED = ("changed stages: activations, attribution, prism_pca, prism, thresholds, scoring, "
           "masking, top_images, receptive_fields, unit_attribution, threshold_sweep")


def _spec(root: Path, factory: Path, checkpoint: Path | None = None) -> JobSpec:
    model: dict[str, object] = {"factory": f"{factory}:build", "preprocess": {"size": 8, **RAW}}
    if checkpoint is not None:
        model["weights"] = {"checkpoint": str(checkpoint)}
    return parse_spec({"model": model, "layers": ["pool"], "dataset": {"root": str(root)},
                       "method": {"quantile": 0.1, "top_k": 8},
                       "resources": {"batch_size": 2, "shard_images": 2, "units_per_task": 1}})


def _computed(out: Path) -> dict[str, int]:
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    return {name: state["computed"] for name, state in stages.items()}


def _save_weights(path: Path, red: float) -> None:
    import torch

    state = {"conv.weight": torch.tensor([red, 0.0, 0.0])[None, :, None, None],
             "conv.bias": torch.zeros(1)}
    torch.save(state, path)


def _check_redo(spec: JobSpec, out: Path) -> None:
    """``spec`` differs from the run in ``out`` by the model's content only."""
    with pytest.raises(SpecError, match=CHANGED):
        run_stages(spec, out)
    run_stages(spec, out, force=True)
    assert _computed(out) == REDONE
    run_stages(spec, out)
    assert _computed(out) == ALL


def test_editing_the_factory_file_redoes_activations(four_images: Path, tmp_path: Path) -> None:
    """The same factory path with edited weights is a changed job from activations on."""
    factory, out = tmp_path / "net.py", tmp_path / "out"
    factory.write_text(NET.format(w=1.0))
    spec = _spec(four_images, factory)
    run_stages(spec, out)
    first = spec.spec_hash()
    assert _computed(out) == {**REDONE, "concepts": 2}
    factory.write_text(NET.format(w=0.5))
    assert spec.spec_hash() != first
    _check_redo(spec, out)


def test_replacing_the_checkpoint_redoes_activations(four_images: Path, tmp_path: Path) -> None:
    """The same checkpoint path with other weights is a changed job from activations on; a
    copy of the same checkpoint elsewhere is the same job."""
    factory, ckpt, out = tmp_path / "net.py", tmp_path / "model.pt", tmp_path / "out"
    factory.write_text(NET.format(w=1.0))
    _save_weights(ckpt, 1.0)
    run_stages(_spec(four_images, factory, ckpt), out)
    copy = tmp_path / "elsewhere" / "same.pt"
    copy.parent.mkdir()
    copy.write_bytes(ckpt.read_bytes())
    run_stages(_spec(four_images, factory, copy), out)
    assert _computed(out) == ALL
    _save_weights(ckpt, 0.5)
    _check_redo(_spec(four_images, factory, ckpt), out)


@pytest.mark.parametrize("kind", ["netdissect", "compositional", "clustered"])
def test_images_dataset_is_refused_before_any_work(tmp_path: Path, kind: str) -> None:
    """An images dataset with a concept-scoring method is one SpecError naming format and
    method, raised before the model is built (its factory file does not exist) and before
    the output directory is made."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (4, 4)).save(photos / "a.png")
    spec = parse_spec({"model": {"factory": f"{tmp_path}/absent.py:make"}, "layers": ["x"],
                       "dataset": {"format": "images", "root": str(photos)},
                       "method": {"kind": kind}})
    expected = (f"dataset format 'images' has no concept labels; method '{kind}' needs them. "
                "Hint: use a concept dataset")
    with pytest.raises(SpecError, match=f"^{expected}") as info:
        preflight(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match=f"^{expected}"):
        run_stages(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")


@pytest.mark.parametrize(("method", "studies", "needle"), [
    ({"kind": "netdissect"}, {"ranges_importance": {}},
     r"'studies.ranges_importance': needs method kind 'clustered' with clusters >= 2 \(got "
     r"netdissect\)"),
    ({"kind": "clustered", "clusters": 1}, {"ranges_importance": {}},
     r"needs method kind 'clustered' with clusters >= 2 \(got clustered with clusters 1\)"),
    ({"kind": "none"}, {"concept_blackout": {}},
     "'studies.concept_blackout': needs a method that scores concepts"),
    ({"kind": "none"}, {"unit_ablation": {}},
     "'studies.unit_ablation': needs a method that scores concepts"),
])
def test_studies_refuse_the_wrong_method_before_any_work(
        four_images: Path, tmp_path: Path, method: dict, studies: dict, needle: str) -> None:
    """One line naming the study and what it needs; no model built, no directory made."""
    spec = parse_spec({"model": {"factory": f"{tmp_path}/absent.py:make"}, "layers": ["x"],
                       "dataset": {"root": str(four_images)}, "method": method,
                       "studies": studies})
    with pytest.raises(SpecError, match=needle) as info:
        run_stages(spec, tmp_path / "out")
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


def test_concept_studies_refuse_an_images_dataset(tmp_path: Path) -> None:
    """Method none runs on photos, but a blackout needs concept masks."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (4, 4)).save(photos / "a.png")
    spec = parse_spec({"model": {"factory": f"{tmp_path}/absent.py:make"}, "layers": ["x"],
                       "dataset": {"format": "images", "root": str(photos)},
                       "method": {"kind": "none"}, "studies": {"concept_blackout": {}}})
    with pytest.raises(SpecError, match="'studies.concept_blackout': needs a concept dataset "
                                        r"\(got format 'images'\)"):
        preflight(spec)


@pytest.mark.parametrize("study", ["ranges_importance", "unit_ablation"])
def test_decision_studies_need_logits(four_images: Path, tmp_path: Path, study: str) -> None:
    """A model whose output is a feature map is refused in preflight, in one line."""
    from ray_dissect.errors import ModelError

    spec = parse_spec({"model": {"factory": f"{PLANTED}:red_channel",
                                 "preprocess": {"size": 8, **RAW}},
                       "layers": ["pool"], "dataset": {"root": str(four_images)},
                       "method": {"kind": "clustered", "clusters": 3},
                       "studies": {study: {}}})
    with pytest.raises(ModelError, match=r"not \(batch, classes\) logits; got \(1, 1, 4, 4\)"):
        run_stages(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()
