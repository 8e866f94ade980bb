"""Attribution targets per image (folder, a list of classes), their probabilities and class
names, and feature maps of their own layers, in a real in-process job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import Saliency
from fixtures.photos import BAD, PLANTED, photo_folder, photo_job
from fixtures.planted import tiny_classifier

from ray_dissect.datasets.images import ImageFolderDataset
from ray_dissect.errors import SpecError
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import ImagesDatasetSpec, parse_spec
from ray_dissect.storage import arrays
from ray_dissect.visualize.targets import class_names, folder_targets, imagenet_names

CLASSES = ("lmk", "sky", "geo", "sea")


def _job(base: Path, attribution: dict[str, Any]) -> tuple[Path, Path]:
    root = photo_folder(base / "photos")
    (base / "classes.txt").write_text("\n".join(CLASSES) + "\n\n")
    spec = photo_job(root, analyses={"attribution": {"classes": str(base / "classes.txt"),
                                                     **attribution}})
    run_stages(parse_spec(spec), base / "out")
    return root, base / "out"


def _inputs(root: Path) -> tuple[torch.Tensor, list[int], ImageFolderDataset]:
    """The network inputs of the readable images, their rows, and the dataset."""
    ds = ImageFolderDataset(ImagesDatasetSpec(root=str(root)))
    rows = [i for i, s in enumerate(ds.samples) if not s.image.endswith(BAD)]
    spec = parse_spec(photo_job(root)).model.preprocess
    return torch.from_numpy(preprocess([ds.read_image(i) for i in rows], spec)), rows, ds


def test_folder_target_explains_each_image_s_folder_class(tmp_path: Path) -> None:
    """target: folder maps geo/ -> class 2 and lmk/ -> class 0 through the classes file; the
    maps are the saliency of that class; probabilities are the softmax computed here; the
    class names are recorded for the report."""
    root, out = _job(tmp_path, {"methods": ["saliency"], "target": "folder"})
    store = out / "attribution.zarr"
    x, rows, ds = _inputs(root)
    want = np.array([CLASSES.index(ds.classes[int(lab)]) for lab in ds.labels])
    assert set(want.tolist()) == {0, 2}
    assert arrays.open_array(store, "targets")[:].tolist() == want.tolist()
    model = tiny_classifier().eval()
    t = torch.as_tensor(want[rows])
    sal = Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=True).amax(1)
    np.testing.assert_allclose(arrays.open_array(store, "saliency")[rows], sal.numpy(),
                               rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        probs = torch.softmax(model(x).double(), 1).gather(1, t[:, None])[:, 0]
    np.testing.assert_allclose(arrays.open_array(store, "probabilities")[rows], probs.numpy(),
                               rtol=1e-6)
    assert (out / "attribution" / "classes.json").read_text() == '["lmk", "sky", "geo", "sea"]'


def test_class_list_target_and_feature_layers(tmp_path: Path) -> None:
    """target: [3, 1] stores (n, 2, H, W) maps, each the saliency of that class;
    feature_layers store each layer's maps under its own array, apart from the
    Grad-CAM layer."""
    root, out = _job(tmp_path, {"methods": ["saliency", "feature_maps"], "target": [3, 1],
                                "feature_layers": ["features.0", "features.2"]})
    store = out / "attribution.zarr"
    x, rows, _ = _inputs(root)
    model = tiny_classifier().eval()
    got = arrays.open_array(store, "saliency")[:]
    assert got.shape == (8, 2, 16, 16)
    assert arrays.open_array(store, "targets")[:].tolist() == [[3, 1]] * 8
    for k, cls in enumerate((3, 1)):
        sal = Saliency(model).attribute(x.clone().requires_grad_(), target=cls, abs=True)
        np.testing.assert_allclose(got[rows, k], sal.amax(1).numpy(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        layers = {"features.0": model.features[0](x), "features.2": model.features[:3](x)}
    for name, maps in layers.items():
        stored = arrays.open_array(store, f"feature_maps.{name}")[rows]
        ref = maps.double().numpy()
        low, high = ref.min((2, 3), keepdims=True), ref.max((2, 3), keepdims=True)
        want = np.rint(255 * (ref - low) / np.where(high > low, high - low, 1))
        assert stored.shape == ref.shape and np.abs(stored.astype(int) - want).max() <= 1
    assert (store / "data" / "feature_maps.features.0").is_dir()
    assert not (store / "data" / "feature_maps").exists()


def test_folder_target_needs_class_folders(tmp_path: Path, four_images: Path) -> None:
    """target: folder on a dataset without class folders is refused before any work."""
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_classifier",
                  "preprocess": {"size": 8}},
        "layers": ["features"], "dataset": {"root": str(four_images)},
        "analyses": {"attribution": {"methods": ["saliency"], "target": "folder"}}})
    with pytest.raises(SpecError, match=r"target.*'folder' needs images in class folders"):
        run_stages(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_classes_file_with_the_wrong_count_is_refused_before_any_work(tmp_path: Path) -> None:
    """A classes file of 3 names for the 4-output classifier stops the job before its
    directory is written."""
    root = photo_folder(tmp_path / "photos")
    (tmp_path / "classes.txt").write_text("a\nb\nc\n")
    spec = photo_job(root, analyses={"attribution": {"methods": ["saliency"],
                                                     "classes": str(tmp_path / "classes.txt")}})
    with pytest.raises(SpecError, match=r"classes.*one name per output.*3 names.*expected 4"):
        run_stages(parse_spec(spec), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_class_names_and_folder_mapping() -> None:
    """ImageNet names for 1,000 outputs (torchvision's list), folders when as many as the
    outputs, none otherwise; folder names matched ignoring case and _ vs space."""
    names = imagenet_names()
    assert len(names) == 1000 and names[0] == "tench" and names[207] == "golden retriever"
    assert class_names(1000, None, ("a", "b")) == names
    assert class_names(2, None, ("a", "b")) == ("a", "b")
    assert class_names(3, None, ("a", "b")) == ()
    got = folder_targets(("Golden_Retriever", "tench"), np.array([1, 0, 0]), names)
    assert got.tolist() == [0, 207, 207]
    with pytest.raises(SpecError, match="not one of the model's classes"):
        folder_targets(("dragon",), np.array([0]), names)
    with pytest.raises(SpecError, match="outside every class folder"):
        folder_targets(("a", "b"), np.array([0, -1]), ("a", "b"))
