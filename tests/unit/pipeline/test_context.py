"""A work environment parses the dataset once and reports its one-off costs once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.context import WorkEnv
from ray_dissect.spec import parse_spec


@pytest.mark.parametrize("first", ["dataset", "concept_dataset"])
def test_the_dataset_is_opened_once_for_both_views(four_images: Path, tmp_path: Path,
                                                   first: str) -> None:
    """Whichever of the images' and the concepts' view is asked first, the other is the same
    object, and one dataset_open is reported (then nothing, once drained)."""
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"root": str(four_images)}})
    env = WorkEnv(spec, JobDir(tmp_path))
    opened = getattr(env, first)
    assert env.dataset is opened and env.concept_dataset is opened
    assert list(env.drain_timings()) == ["dataset_open"]
    assert env.drain_timings() == {}
