"""``ray-dissect compare``'s visual page: two jobs (a seeded conv net and the planted colour
detectors) on the same generated dataset; every picture checked against the models' own
weights or the stored activations, scaled here independently."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from fixtures.planted import color_detectors, tiny_classifier
from PIL import Image
from typer.testing import CliRunner

from ray_dissect.cli import app
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.report.compare_page import FILTER_SIDE, MAP_SIDE, PAD, write_compare_page
from ray_dissect.results import open_job
from ray_dissect.spec import parse_spec

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}


def _run(data: Path, out: Path, factory: str, layers: list[str]) -> Path:
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:{factory}", "preprocess": {"size": 32, **RAW}},
        "layers": layers, "dataset": {"root": str(data)},
        "method": {"kind": "netdissect", "quantile": 0.2},
        "resources": {"batch_size": 8, "shard_images": 8, "units_per_task": 4}})
    run_stages(spec, out)
    return out


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("compare_page")
    data = generate_dataset(base / "ds", 16, seed=3, image_size=32, mask_size=16)
    return (_run(data, base / "a", "tiny_classifier", ["features.1", "features.3"]),
            _run(data, base / "b", "color_detectors", ["pool"]))


def _scaled(values: np.ndarray) -> np.ndarray:
    """Min-max over the last two axes to 0..255 (a constant map gives 0)."""
    v = np.asarray(values, np.float64)
    low = v.min(axis=(-2, -1), keepdims=True)
    span = v.max(axis=(-2, -1), keepdims=True) - low
    return np.rint(255 * np.where(span > 0, (v - low) / np.where(span > 0, span, 1), 0)
                   ).astype(np.uint8)


def _tiles(png: Path, n: int, h: int, w: int, ncol: int, min_side: int) -> np.ndarray:
    """Tile k of a grid PNG, read back at one pixel per source pixel: (n, h, w[, C])."""
    grid = np.asarray(Image.open(png))
    f = -(-min_side // min(h, w))
    out = []
    for k in range(n):
        r, c = divmod(k, ncol)
        y, x = r * (h * f + PAD), c * (w * f + PAD)
        tile = grid[y:y + h * f, x:x + w * f]
        assert (tile == tile[::f, ::f].repeat(f, 0).repeat(f, 1)).all()  # nearest blocks
        out.append(tile[::f, ::f])
    return np.stack(out)


def _filters(weight: np.ndarray) -> np.ndarray:
    """(O, I, kh, kw) conv weights -> (O, kh, kw, I) uint8, each filter min-max scaled."""
    flat = _scaled(weight.reshape(len(weight), 1, -1))
    return flat.reshape(weight.shape).transpose(0, 2, 3, 1)


def test_filters_are_each_models_first_conv(jobs: tuple[Path, Path], tmp_path: Path) -> None:
    page = write_compare_page(*jobs, out=tmp_path / "page")
    a = tiny_classifier().features[0].weight.detach().numpy()  # (6, 3, 3, 3)
    b = color_detectors().conv.weight.detach().numpy()  # (3, 3, 1, 1)
    np.testing.assert_array_equal(_tiles(page.parent / "a_filters.png", 6, 3, 3, 8, FILTER_SIDE),
                                  _filters(a))
    np.testing.assert_array_equal(_tiles(page.parent / "b_filters.png", 3, 1, 1, 8, FILTER_SIDE),
                                  _filters(b))


def test_feature_maps_are_the_stored_activations(jobs: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    page = write_compare_page(*jobs, out=tmp_path / "page", images=3)
    html = page.read_text()
    for tag, (job, layer) in {"a": (jobs[0], "features.1"), "b": (jobs[1], "pool")}.items():
        acts = open_job(job).activations(layer)
        for i in range(3):
            stored = np.asarray(acts[i])
            units, h, w = stored.shape
            got = _tiles(page.parent / f"{tag}_{i}.png", units, h, w, 8, MAP_SIDE)
            np.testing.assert_array_equal(got, _scaled(stored))
    assert not (page.parent / "a_3.png").exists()
    assert html.count("stored activations") == 6 and "computed with the model" not in html
    imgs = re.findall(r"<img [^>]*>", html)
    assert len(imgs) == 2 + 3 * 3
    assert all('loading="lazy"' in t and "width=" in t and "height=" in t for t in imgs)
    assert "http" not in html and "<script" not in html


def test_images_not_stored_are_computed_with_the_model(jobs: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """A baseline whose first shard is not done: its maps come from its model."""
    copy = tmp_path / "b"
    shutil.copytree(jobs[1], copy)
    marks = zarr.open_array(str(copy / "activations.zarr"), path="done/pool", mode="r+")
    marks[0] = False
    page = write_compare_page(jobs[0], copy, out=tmp_path / "page", images=2)
    stored = open_job(jobs[1]).activations("pool")
    for i in range(2):
        got = _tiles(page.parent / f"b_{i}.png", 3, 16, 16, 8, MAP_SIDE)
        assert np.abs(got.astype(int) - _scaled(stored[i]).astype(int)).max() <= 1
    assert page.read_text().count("computed with the model") == 2


def test_different_datasets_and_unknown_layers_are_refused(jobs: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    spec = (jobs[1] / "spec.json").read_text()
    (other / "spec.json").write_text(spec.replace(str(jobs[1].parent / "ds"),
                                                  str(tmp_path / "ds2")))
    with pytest.raises(SpecError, match="different datasets"):
        write_compare_page(jobs[0], other, out=tmp_path / "p")
    with pytest.raises(SpecError, match=r"did you mean 'features\.1'"):
        write_compare_page(*jobs, out=tmp_path / "p", layer_a="features1")
    result = CliRunner().invoke(app, ["compare", str(jobs[0]), str(jobs[1]), "--no-formulas",
                                      "--layer-b", "poll", "--page", str(tmp_path / "p")])
    assert result.exit_code == 2 and "did you mean 'pool'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_writes_the_page_with_the_chosen_layers(jobs: tuple[Path, Path]) -> None:
    result = CliRunner().invoke(app, ["compare", str(jobs[0]), str(jobs[1]), "--no-formulas",
                                      "--images", "2", "--layer-a", "features.3"])
    assert result.exit_code == 0, result.output
    page = jobs[0] / "studies" / "compare" / "index.html"
    assert f"wrote {page}" in result.output
    acts = open_job(jobs[0]).activations("features.3")
    got = _tiles(page.parent / "a_1.png", 8, 32, 32, 8, MAP_SIDE)
    np.testing.assert_array_equal(got, _scaled(acts[1]))
    assert not (page.parent / "a_2.png").exists()
