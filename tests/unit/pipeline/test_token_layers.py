"""A whole job on token and channels-last layers: the same units read three ways give the same
stored maps, thresholds and records; a torchvision ViT is dissected with no declaration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.spec import parse_spec
from ray_dissect.storage import arrays

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
LAYERS = ["detect.pool", "tokens", "nhwc"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("tok") / "ds", 24, seed=4, image_size=32,
                            mask_size=16)


def _job(data: Path, out: Path, factory: str, layers: list[str], **model: object) -> Path:
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:{factory}", "preprocess": {"size": 32, **RAW}, **model},
        "layers": layers, "dataset": {"root": str(data)},
        "method": {"kind": "netdissect", "quantile": 0.05, "iou_threshold": 0.0},
        "resources": {"batch_size": 8, "shard_images": 16, "units_per_task": 2}})
    run_stages(spec, out)
    return out


def test_token_and_nhwc_layers_dissect_as_their_conv_maps(data: Path, tmp_path: Path) -> None:
    out = _job(data, tmp_path / "out", "token_colors", LAYERS,
               layouts={"nhwc": {"kind": "nhwc"}})
    acts = {layer: arrays.open_array(out / "activations.zarr", layer)[:] for layer in LAYERS}
    assert acts["detect.pool"].shape == (24, 3, 16, 16)
    records = {layer: [r.model_dump(exclude={"layer"}) for r in
                       read_unit_records(JobDir(out).records(layer))] for layer in LAYERS}
    for layer in LAYERS[1:]:
        assert np.array_equal(acts[layer], acts["detect.pool"])
        assert records[layer] == records["detect.pool"]
    labels = [r["label"] for r in records["tokens"]]
    assert labels[0] is not None and "red" in labels[0]["name"]


def test_a_torchvision_vit_is_dissected_without_declaring_its_tokens(data: Path,
                                                                     tmp_path: Path) -> None:
    """tiny_vit's encoder layers output (n, 17, 16): a class token and a 4 x 4 patch grid."""
    layer = "encoder.layers.encoder_layer_1"
    out = _job(data, tmp_path / "vit", "tiny_vit", [layer])
    assert arrays.open_array(out / "activations.zarr", layer).shape == (24, 16, 4, 4)
    assert [r.unit for r in read_unit_records(JobDir(out).records(layer))] == list(range(16))



def test_attribution_on_a_vit_reads_its_tokens_as_maps(data: Path, tmp_path: Path) -> None:
    """An attribution job on tiny_vit's first encoder layer (no layout declared) stores the
    Grad-CAM of the token grid (checked against the runner, itself checked against a
    hand-written Grad-CAM in tests/unit/visualize/test_vit_gradcam.py) and the layer's feature
    maps as the 4 x 4 grid of its 16 channels."""
    import torch
    from fixtures.planted import tiny_vit

    from ray_dissect.models.extract import preprocess
    from ray_dissect.results import open_job
    from ray_dissect.visualize.attribution import AttributionRunner, to_display

    layer = "encoder.layers.encoder_layer_0"
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:tiny_vit", "preprocess": {"size": 32, **RAW}},
        "layers": [layer], "dataset": {"root": str(data)}, "method": {"kind": "none"},
        "analyses": {"attribution": {"methods": ["gradcam", "feature_maps"], "layer": layer,
                                     "limit": 6}},
        "resources": {"batch_size": 4, "shard_images": 16}})
    run_stages(spec, tmp_path / "out")
    results = open_job(tmp_path / "out")
    x = torch.from_numpy(preprocess([results.image(i) for i in range(6)], spec.model.preprocess))
    vit = tiny_vit()
    want = AttributionRunner(vit, layer).attribute(x, ["gradcam"])["gradcam"].numpy()
    store = tmp_path / "out" / "attribution.zarr"
    got = arrays.open_array(store, "gradcam")[:]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert got.shape == (6, 32, 32) and float(got.max()) > 0
    seen: list[torch.Tensor] = []
    hook = vit.get_submodule(layer).register_forward_hook(lambda _m, _a, o: seen.append(o))
    with torch.no_grad():
        vit(x)
    hook.remove()
    grid = seen[0][:, 1:].reshape(6, 4, 4, 16).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(arrays.open_array(store, "feature_maps")[:], to_display(grid))
