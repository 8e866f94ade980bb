"""The attribution stage against captum run directly in the test on the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GuidedBackprop, LayerGradCam, Saliency
from fixtures.planted import tiny_classifier

from ray_dissect.datasets.broden import BrodenDataset
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import SpecError
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import DatasetSpec, PreprocessSpec, parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
METHODS = ["saliency", "guided_backprop", "gradcam", "cam", "feature_maps", "weights"]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A NetDissect job with attribution maps of the first 10 of 12 images, in-process."""
    base = tmp_path_factory.mktemp("attr")
    data = generate_dataset(base / "ds", 12, seed=2, image_size=32, mask_size=16)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_classifier", "preprocess": {"size": 32}},
        "layers": ["features"], "dataset": {"root": str(data)},
        "analyses": {"attribution": {"methods": METHODS, "layer": "features", "limit": 10}},
        "resources": {"batch_size": 4, "shard_images": 4}})
    run_stages(spec, base / "out")
    return data, base / "out" / "attribution.zarr"


def _reference(data: Path) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    ds = BrodenDataset(DatasetSpec(root=str(data)))
    x = torch.from_numpy(preprocess([ds.read_image(i) for i in range(10)],
                                    PreprocessSpec(size=32)))
    model = tiny_classifier()
    with torch.no_grad():
        targets = model(x).argmax(1)
    return x, targets, model


def test_maps_equal_captum_on_the_same_images(job: tuple[Path, Path]) -> None:
    """Saliency, guided backprop and Grad-CAM as stored equal captum's, per predicted class."""
    data, store = job
    x, targets, model = _reference(data)
    sal = Saliency(model).attribute(x.clone().requires_grad_(), target=targets, abs=True)
    guided = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=targets)
    cam = LayerGradCam(model, model.features).attribute(x, target=targets,
                                                        relu_attributions=True)
    want = {"saliency": sal.amax(1), "guided_backprop": guided.abs().amax(1),
            "gradcam": F.interpolate(cam, size=(32, 32), mode="bilinear",
                                     align_corners=False)[:, 0]}
    for name, ref in want.items():
        got = arrays.open_array(store, name)[:]
        np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-4, atol=1e-6)
        assert np.abs(got).max() > 0, name
    assert arrays.open_array(store, "targets")[:].tolist() == targets.tolist()


def test_cam_is_the_head_weighted_feature_maps(job: tuple[Path, Path]) -> None:
    """CAM equals sum_c W[target, c] A_c, upsampled, computed here from the model's maps."""
    data, store = job
    x, targets, model = _reference(data)
    with torch.no_grad():
        maps = model.features(x)
        cam = torch.einsum("bc,bchw->bhw", model.fc.weight[targets], maps)
        up = F.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(arrays.open_array(store, "cam")[:], up[:, 0].numpy(),
                               rtol=1e-4, atol=1e-6)


def _grey(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    low, high = values.min(axis=axes, keepdims=True), values.max(axis=axes, keepdims=True)
    return np.rint(255 * (values - low) / np.where(high > low, high - low, 1)).astype(np.uint8)


def test_feature_maps_and_weights_are_the_scaled_maps_and_filters(job: tuple[Path, Path]
                                                                  ) -> None:
    """feature_maps: the layer's maps each min-max scaled to 0..255; weights: the first
    convolution's filters, each scaled over all its values, as (O, kh, kw, I)."""
    data, store = job
    x, _, model = _reference(data)
    with torch.no_grad():
        maps = model.features(x).numpy().astype(np.float64)
    got = arrays.open_array(store, "feature_maps")[:]
    assert got.shape == (10, 8, 32, 32) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - _grey(maps, (2, 3))).max() <= 1
    filters = model.features[0].weight.detach().numpy().astype(np.float64)  # (6, 3, 3, 3)
    want = np.moveaxis(_grey(filters, (1, 2, 3)), 1, -1)
    stored = np.load(store.parent / "attribution" / "weights.npz")["weights"]
    assert stored.shape == (6, 3, 3, 3) and np.abs(stored.astype(int) - want).max() <= 1


def test_crop_boxes_cover_the_thresholded_gradcam(job: tuple[Path, Path]) -> None:
    """Each crop box is the bounding box of the min-max-normalised Grad-CAM >= 0.3."""
    _, store = job
    gradcam, boxes = arrays.open_array(store, "gradcam")[:], arrays.open_array(store,
                                                                                 "crop_boxes")[:]
    assert boxes.shape == (10, 4)
    for heat, box in zip(gradcam, boxes, strict=True):
        norm = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
        rows, cols = np.nonzero(norm >= 0.3)
        assert box.tolist() == [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]


def test_unknown_attribution_layer_is_refused_before_any_work(four_images: Path,
                                                              tmp_path: Path) -> None:
    """A layer the model lacks stops the job before the job directory is written."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_classifier", "preprocess": {"size": 8}},
        "layers": ["features"], "dataset": {"root": str(four_images)},
        "analyses": {"attribution": {"methods": ["gradcam"], "layer": "feature"}}})
    with pytest.raises(SpecError, match=r"analyses\.attribution\.layer.*'feature'"):
        run_stages(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_layer_methods_need_a_layer() -> None:
    """gradcam without a layer is refused when the spec is read, naming the field."""
    with pytest.raises(SpecError, match=r"analyses\.attribution.*need 'layer'"):
        parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                    "dataset": {"root": "/d"}, "analyses": {"attribution": {
                        "methods": ["gradcam"]}}})
