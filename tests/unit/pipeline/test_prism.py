"""The prism_pca and prism stages in a whole in-process job, against a numpy PCA computed here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from fixtures.planted import pool_net
from PIL import Image

from ray_dissect.errors import SpecError
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import JobSpec, PreprocessSpec, parse_spec
from ray_dissect.storage import arrays
from ray_dissect.visualize.prism import DROPPED, PrismPCA, cluster_presence, prism_maps

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
N, BAD = 9, 5  # PRISM covers the first 9 images; image 5 is an empty file
PRISM = {"layer": "features.5", "ge_layers": ["features.1", "features.2"],  # forward order
         "quantize": "inclusive", "split_rgb": True, "clusters": 3, "limit": N,
         "saliency": "gradcam"}


def _folder(root: Path) -> Path:
    """Eleven smooth random 32 px images (seeded) with a zero-byte file at row 5."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(11):
        name = root / f"{i:02d}.png"
        if i == BAD:
            name.write_bytes(b"")
            continue
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((32, 32), Image.Resampling.BILINEAR).save(name)
    return root


def _spec(root: Path) -> JobSpec:
    return parse_spec({
        "model": {"factory": f"{PLANTED}:pool_net", "preprocess": {"size": 32}},
        "layers": ["features.5"], "dataset": {"format": "images", "root": str(root)},
        "method": {"kind": "none"}, "analyses": {"prism": PRISM},
        "resources": {"batch_size": 2, "shard_images": 4}})


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("prism")
    root = _folder(base / "images")
    run_stages(_spec(root), base / "out")
    return root, base / "out"


def _features(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The valid images' maps at features.1, features.2 and features.5, computed here."""
    names = sorted(root.glob("*.png"))[:N]
    images = [np.asarray(Image.open(p).convert("RGB")) for i, p in enumerate(names) if i != BAD]
    x = torch.from_numpy(preprocess(images, PreprocessSpec(size=32)))
    model = pool_net()
    with torch.no_grad():
        return model.features[:2](x), model.features[:3](x), model.features(x)


def _numpy_pca(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SVD of the centred (image, position) samples, each axis's largest loading positive."""
    x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double().numpy()
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:3].T * np.sign(vt[:3].T[np.argmax(np.abs(vt[:3].T), axis=0), [0, 1, 2]])
    b, _, h, w = features.shape
    scores = ((x - mean) @ axes).reshape(b, h, w, 3).transpose(0, 3, 1, 2)
    return scores, axes, mean, s**2 / (s**2).sum()


def _stored(out: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out / "prism.zarr"), mode="r")
    return {name: np.asarray(arr[:]) for name, arr in group["data"].arrays()}


def test_components_equal_a_numpy_pca_of_the_same_features(job: tuple[Path, Path]) -> None:
    """Stored scores and variance ratios equal an SVD PCA computed here over the valid images;
    the unreadable image's row is zero."""
    root, out = job
    stored = _stored(out)
    scores, _, _, ratio = _numpy_pca(_features(root)[2])
    valid = np.arange(N) != BAD
    assert stored["components"].shape == (N, 3, 8, 8)
    np.testing.assert_allclose(stored["components"][valid], scores, rtol=1e-4, atol=1e-4)
    assert not stored["components"][BAD].any()
    np.testing.assert_allclose(stored["variance"], ratio, atol=1e-8)


def test_joint_maps_equal_prism_on_the_whole_set(job: tuple[Path, Path]) -> None:
    """rgb, codes, presence, split panels and clusters equal PRISM run here on all valid
    images at once, with GE from the PCA layer back to the input (the reverse of the listed
    order); the unreadable image gets no colours and cluster -1."""
    root, out = job
    stored = _stored(out)
    f1, f2, f5 = _features(root)
    _, axes, mean, ratio = _numpy_pca(f5)
    pca = PrismPCA(mean=mean, axes=axes, explained_variance_ratio=ratio,
                   n_samples=f5.shape[0] * 64)
    want = prism_maps(f5, pca, [f2, f1], "inclusive", split=True)
    valid = np.arange(N) != BAD
    assert stored["rgb"].shape == (N, 3, 32, 32)
    np.testing.assert_allclose(stored["rgb"][valid], want.rgb.numpy(), atol=1e-4)
    assert want.split is not None
    np.testing.assert_allclose(stored["split"][valid], want.split.numpy(), atol=1e-4)
    np.testing.assert_array_equal(stored["codes"][valid], want.codes.numpy())
    np.testing.assert_array_equal(stored["presence"][valid], want.presence.numpy())
    assert (stored["codes"][valid] == DROPPED).any() and (stored["codes"][BAD] == DROPPED).all()
    labels = cluster_presence(want.presence, 3, seed=0).labels
    np.testing.assert_array_equal(stored["clusters"][valid], labels)
    assert stored["clusters"][BAD] == -1 and not stored["presence"][BAD].any()


def test_resume_with_a_marker_deleted_gives_identical_arrays(job: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """Deleting one shard's done marker in each pass redoes those shards alone, and every
    prism.zarr array comes out byte-identical."""
    root, out = job
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = _stored(copy)
    (copy / "prism" / "pca_000001.done").unlink()
    zarr.open_array(str(copy / "prism.zarr"), path="done/components", mode="r+")[2] = False
    run_stages(_spec(root), copy)
    stages = json.loads((copy / "manifest.json").read_text())["stages"]
    assert stages["prism_pca"]["computed"] == 1 and stages["prism"]["computed"] == 1
    after = _stored(copy)
    assert sorted(after) == sorted(before)
    for name, values in before.items():
        assert after[name].dtype == values.dtype and after[name].tobytes() == values.tobytes()
    assert arrays.done_shards(copy / "prism.zarr", "components").all()


@pytest.mark.parametrize(("change", "field"), [
    ({"layer": "features.9"}, "prism"),
    ({"ge_layers": ["fc"]}, "prism.ge_layers"),
    ({"clusters": 10}, "prism.clusters"),
])
def test_bad_prism_sections_are_refused_before_any_work(tmp_path: Path, change: dict,
                                                        field: str) -> None:
    """An unknown module, a GE layer that runs after the PCA layer and more clusters than
    images stop the job before it writes anything."""
    root = _folder(tmp_path / "images")
    spec = _spec(root).model_dump(mode="json")
    spec["analyses"]["prism"] = {**PRISM, **change}
    with pytest.raises(SpecError, match=rf"'analyses\.{field}'"):
        run_stages(parse_spec(spec), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_ge_the_maps_stay_at_the_pca_resolution(tmp_path: Path) -> None:
    """gradual_extrapolation: false stores rgb at h x w, the joint normalisation of the stored
    scores, and no GE arrays, split panels or clusters."""
    from ray_dissect.visualize.prism import normalize_to_rgb

    root = _folder(tmp_path / "images")
    spec = _spec(root).model_dump(mode="json")
    spec["analyses"]["prism"] = {"layer": "features.5", "gradual_extrapolation": False,
                                 "limit": N}
    run_stages(parse_spec(spec), tmp_path / "out")
    stored = _stored(tmp_path / "out")
    assert sorted(stored) == ["codes", "components", "presence", "rgb", "top_classes",
                              "top_probs", "variance"]
    valid = np.arange(N) != BAD
    want = normalize_to_rgb(torch.from_numpy(stored["components"][valid])).numpy()
    assert stored["rgb"].shape == (N, 3, 8, 8)
    np.testing.assert_array_equal(stored["rgb"][valid], want)


def test_each_input_has_the_models_top_three_predictions(job: tuple[Path, Path]) -> None:
    """top_classes / top_probs are the three largest softmax probabilities of the model's own
    logits, computed here; the unreadable image gets -1 and NaN."""
    root, out = job
    stored = _stored(out)
    names = sorted(root.glob("*.png"))[:N]
    images = [np.asarray(Image.open(p).convert("RGB")) for i, p in enumerate(names) if i != BAD]
    x = torch.from_numpy(preprocess(images, PreprocessSpec(size=32)))
    with torch.no_grad():
        probs = torch.softmax(pool_net()(x).double(), dim=1).numpy()
    rows = [i for i in range(N) if i != BAD]
    want = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(stored["top_classes"][rows], want)
    np.testing.assert_allclose(stored["top_probs"][rows],
                               np.take_along_axis(probs, want, axis=1), rtol=1e-6)
    assert (stored["top_classes"][BAD] == -1).all() and np.isnan(stored["top_probs"][BAD]).all()


def test_alpha_is_captums_gradcam_of_the_predicted_class(job: tuple[Path, Path]) -> None:
    """saliency: gradcam stores captum's LayerGradCam (ReLU) of each predicted class at the
    PCA layer, computed here, and as alpha that map upsampled bilinearly to the rgb's 32 x 32
    and min-max scaled per image; the unreadable image's maps are 0."""
    import torch.nn.functional as F
    from captum.attr import LayerGradCam

    root, out = job
    stored = _stored(out)
    names = sorted(root.glob("*.png"))[:N]
    images = [np.asarray(Image.open(p).convert("RGB")) for i, p in enumerate(names) if i != BAD]
    x = torch.from_numpy(preprocess(images, PreprocessSpec(size=32)))
    model = pool_net()
    predicted = model(x).argmax(1)
    cam = LayerGradCam(model, model.features[5]).attribute(x, target=predicted,
                                                           relu_attributions=True).detach()
    up = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False).double()
    low, high = up.amin((2, 3), keepdim=True), up.amax((2, 3), keepdim=True)
    want = ((up - low) / (high - low)).numpy()
    valid = np.arange(N) != BAD
    assert stored["gradcam"].shape == (N, 1, 8, 8) and stored["alpha"].shape == (N, 1, 32, 32)
    np.testing.assert_allclose(stored["gradcam"][valid], cam.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stored["alpha"][valid], want, atol=1e-5)
    assert (want.max(axis=(1, 2, 3)) == 1).all() and (want.min(axis=(1, 2, 3)) == 0).all()
    assert not stored["alpha"][BAD].any() and not stored["gradcam"][BAD].any()


def test_the_default_saliency_leaves_the_prism_stage_hash_alone(tmp_path: Path) -> None:
    """saliency: none (or left out) hashes as the section did before the field existed;
    gradcam changes the prism stage's inputs (its PCA stage's stay)."""
    from ray_dissect.pipeline.stages.prism import covers, pca_covers

    root = _folder(tmp_path / "images")
    spec = _spec(root).model_dump(mode="json")
    old = {k: v for k, v in PRISM.items() if k != "saliency"}
    specs = [parse_spec({**spec, "analyses": {"prism": {**old, **extra}}})
             for extra in ({}, {"saliency": "none"}, {"saliency": "gradcam"})]
    plain, explicit, fused = (covers({}, s) for s in specs)
    assert plain == explicit and "saliency" not in plain["prism"]
    assert fused != plain and fused["prism"]["saliency"] == "gradcam"
    assert pca_covers({}, specs[0]) == pca_covers({}, specs[2])
