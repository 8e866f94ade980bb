"""``ray-dissect show``: a unit's map on chosen images, against the planted model's maps
computed here directly with torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.planted import color_detectors
from PIL import Image
from typer.testing import CliRunner

from ray_dissect.cli import app
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.errors import DatasetError, SpecError
from ray_dissect.pipeline.run import run_stages
from ray_dissect.records.io import read_unit_records
from ray_dissect.results import open_job
from ray_dissect.results.show import show_unit, views
from ray_dissect.spec import parse_spec
from ray_dissect.visualize.attribution import overlay
from ray_dissect.visualize.unit_maps import DARKEN

PLANTED = str(Path(__file__).parents[2] / "fixtures" / "planted.py")
RAW = {"mean": [0, 0, 0], "std": [1, 1, 1]}
SIZE = 32


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("show")
    data = generate_dataset(base / "ds", 16, seed=2, image_size=32, mask_size=16)
    spec = parse_spec({
        "model": {"factory": f"{PLANTED}:color_detectors", "preprocess": {"size": SIZE, **RAW}},
        "layers": ["pool"], "dataset": {"root": str(data)},
        "method": {"kind": "netdissect", "quantile": 0.2},
        "resources": {"batch_size": 8, "shard_images": 8, "units_per_task": 3}})
    run_stages(spec, base / "out")
    return base / "out"


def _half_red(path: Path, side: int = 48) -> Path:
    """Left half pure red, right half pure blue, at another size than the model's input."""
    img = np.zeros((side, side, 3), np.uint8)
    img[:, :side // 2, 0] = 255
    img[:, side // 2:, 2] = 255
    Image.fromarray(img).save(path)
    return path


def _reference(path: Path, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """The resized image and the unit's map upsampled to it, computed with torch here."""
    image = np.asarray(Image.open(path).convert("RGB").resize((SIZE, SIZE),
                                                              Image.Resampling.BILINEAR))
    x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        maps = color_detectors()(x)[:, unit:unit + 1]
    heat = F.interpolate(maps, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return image, heat[0, 0].numpy()


def test_the_overlay_and_mask_are_the_units_own_map(job: Path, tmp_path: Path) -> None:
    path = _half_red(tmp_path / "half.png")
    written = show_unit(job, "pool", 0, [path], tmp_path / "out")
    assert [p.name for p in written] == ["pool_0_half.png", "pool_0_half_mask.png"]
    image, heat = _reference(path, 0)
    shown = np.asarray(Image.open(written[0]))
    np.testing.assert_array_equal(shown, overlay(image, heat))
    threshold = next(r.threshold for r in read_unit_records(job / "records" / "pool.jsonl")
                     if r.unit == 0)
    revealed = np.asarray(Image.open(written[1]))
    inside = heat > threshold
    assert inside[:, :8].all() and not inside[:, -8:].any()  # the red half fires, blue not
    np.testing.assert_array_equal(revealed[inside], image[inside])
    np.testing.assert_array_equal(revealed[~inside], np.rint(image[~inside] * DARKEN))


def test_bad_requests_are_one_line_errors(job: Path, tmp_path: Path) -> None:
    path = _half_red(tmp_path / "half.png")
    with pytest.raises(SpecError, match="did you mean 'pool'"):
        views(open_job(job), "pol", 0, [path])
    with pytest.raises(SpecError, match="0 <= unit < 3"):
        views(open_job(job), "pool", 3, [path])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read image"):
        views(open_job(job), "pool", 0, [broken])


def test_cli_writes_and_names_the_pictures(job: Path, tmp_path: Path) -> None:
    path = _half_red(tmp_path / "half.png")
    result = CliRunner().invoke(app, ["show", str(job), str(path), "--layer", "pool",
                                      "--unit", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"wrote {tmp_path / 'o' / 'pool_2_half.png'}",
                                          f"wrote {tmp_path / 'o' / 'pool_2_half_mask.png'}"]
    bad = CliRunner().invoke(app, ["show", str(job), str(path), "--layer", "nope",
                                   "--unit", "0"])
    assert bad.exit_code != 0 and "not a layer of this job" in bad.output
