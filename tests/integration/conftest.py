"""One shared local Ray cluster for the whole pytest session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset of 96 images at 64 px with 32 px masks."""
    from ray_dissect.generate import generate_dataset

    root = tmp_path_factory.mktemp("gen") / "ds"
    return generate_dataset(root, 96, seed=3, image_size=64, mask_size=32)
