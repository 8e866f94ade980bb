"""One shared local Ray cluster for the whole pytest session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.s3 import LocalS3


@pytest.fixture(scope="session")
def ray_cluster(local_s3: LocalS3) -> Iterator[None]:
    """The session's Ray cluster. The local S3 starts first: Ray's processes inherit the
    environment at ``ray.init``, and that is how they learn its endpoint."""
    import ray

    del local_s3

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset of 96 images at 64 px with 32 px masks."""
    from ray_dissect.datasets.synthetic.generate import generate_dataset

    root = tmp_path_factory.mktemp("gen") / "ds"
    return generate_dataset(root, 96, seed=3, image_size=64, mask_size=32)
