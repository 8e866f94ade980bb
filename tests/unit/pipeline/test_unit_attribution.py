"""Per-unit attribution (stage ``unit_attribution``) against autograd and captum run here on
each unit's top images, and its overlays on the unit pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from fixtures.photos import photo_folder, photo_job
from fixtures.planted import tiny_classifier
from PIL import Image

from ray_dissect.errors import SpecError
from ray_dissect.models.extract import preprocess
from ray_dissect.pipeline.run import run_stages
from ray_dissect.pipeline.table import build_report
from ray_dissect.report.unit_attribution import read_parts
from ray_dissect.results import JobResults, open_job
from ray_dissect.spec import parse_spec
from ray_dissect.visualize.display import overlay


def _run(base: Path, section: dict[str, Any]) -> Path:
    root = photo_folder(base / "photos")
    spec = photo_job(root, analyses={"unit_attribution": {"layer": "features", **section}})
    run_stages(parse_spec(spec), base / "out")
    return base / "out"


def _unit_score(model: torch.nn.Module, unit: int) -> Any:
    return lambda x: model.features(x)[:, unit].mean((1, 2))


@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_unit_maps_equal_autograd_and_captum(tmp_path: Path, method: str) -> None:
    """Each stored map is, on the unit's top image: the max over channels of |d mean A_u /
    d x| (plain autograd) or captum IntegratedGradients of mean A_u (zero baseline, 6
    steps) summed over channels; units 0 and 6 (both alive), their first 2 top images."""
    out = _run(tmp_path, {"units": [0, 6], "top_k": 2, "method": method, "steps": 6,
                          "units_per_task": 1})
    job = open_job(out)
    parts = read_parts(job.root, "features")
    assert sorted(parts) == [0, 6]
    model = tiny_classifier().eval()
    for unit, (images, maps) in parts.items():
        rec = job.records("features")[unit]
        assert images.tolist() == [t.index for t in rec.top_images[:2]]
        x = torch.from_numpy(preprocess([job.dataset.read_image(i) for i in images],
                                        job.spec.model.preprocess))
        if method == "gradient":
            leaf = x.clone().requires_grad_()
            (g,) = torch.autograd.grad(_unit_score(model, unit)(leaf).sum(), leaf)
            want = g.abs().amax(1)
        else:
            want = IntegratedGradients(_unit_score(model, unit)).attribute(
                x, baselines=0.0, n_steps=6).sum(1)
        assert float(want.abs().max()) > 0
        np.testing.assert_allclose(maps, want.detach().numpy(), rtol=1e-4, atol=1e-7)


def test_unit_pages_draw_the_maps_over_the_top_images(tmp_path: Path) -> None:
    """The unit page of a chosen unit shows one overlay per top image, equal to the stored
    map drawn over the image; an unchosen unit's page shows none."""
    out = _run(tmp_path, {"units": [2], "top_k": 2})
    build_report(JobResults(out), out / "report")
    job = open_job(out)
    images, maps = read_parts(job.root, "features")[2]
    page = (out / "report" / "units" / "features" / "2.html").read_text()
    assert page.count('src="2_attr_') == 2 and "What drives this unit" in page
    for j, index in enumerate(images.tolist()):
        got = np.asarray(Image.open(out / "report" / "units" / "features" / f"2_attr_{j}.png"))
        want = overlay(np.asarray(Image.open(Path(str(job.root / "..")) / "photos" /
                                             job.dataset.samples[index].image)), maps[j])
        np.testing.assert_array_equal(got, want)
    assert "What drives this unit" not in (out / "report" / "units" / "features" /
                                           "1.html").read_text()


def test_unit_attribution_layer_must_be_dissected(tmp_path: Path) -> None:
    """A layer outside the job's layers, or top_k above top_images.k, is refused first."""
    root = photo_folder(tmp_path / "photos")
    for section, match in (({"layer": "features.0"}, "not among the job's layers"),
                           ({"layer": "features", "top_k": 4}, "at most top_images.k")):
        spec = photo_job(root, analyses={"unit_attribution": section})
        with pytest.raises(SpecError, match=match):
            run_stages(parse_spec(spec), tmp_path / "out")
        assert not (tmp_path / "out").exists()
