"""Checks before any work: a method that scores concepts refuses a dataset without them."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ray_dissect.errors import SpecError
from ray_dissect.pipeline.prepare import preflight
from ray_dissect.pipeline.run import run_stages
from ray_dissect.spec import parse_spec


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
