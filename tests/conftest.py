"""Shared fixtures: the hand-computed 4-image Broden fixture, a local S3 server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures.broden import Row, write_broden
from fixtures.s3 import LocalS3

FIXTURE_LABELS = {
    1: ("box", {"object": 0.5}),
    2: ("ball", {"object": 0.5}),
    3: ("lid", {"part": 0.5}),
    4: ("handle", {"part": 0.5}),
    5: ("red", {"color": 0.5}),
    6: ("kitchen", {"scene": 1.0}),
    7: ("striped", {"texture": 1.0}),
    8: ("dotted", {"texture": 1.0}),
}


def _grid(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


def _image(red: list[list[int]]) -> np.ndarray:
    """8x8 RGB whose 2x2 blocks carry the given red values (so pooling returns them)."""
    r = np.kron(np.array(red, dtype=np.uint8), np.ones((2, 2), dtype=np.uint8))
    return np.stack([r, np.zeros_like(r), np.zeros_like(r)], axis=-1)


def four_image_rows() -> list[Row]:
    """The 4-image fixture whose IoUs are worked out by hand in tests (4x4 masks)."""
    z = [[0] * 4 for _ in range(4)]
    return [
        Row(_image([[250, 250, 0, 0], [250, 250, 0, 0], [0] * 4, [0] * 4]),
            layers={"object": [_grid([[1, 1, 1, 0], [1, 1, 1, 0], [0] * 4, [0] * 4])],
                    "part": [_grid([[3, 3, 0, 0], z[0], z[0], z[0]]),
                             _grid([[0, 4, 0, 0], [0, 4, 0, 0], z[0], z[0]])],
                    "color": [_grid([[5, 5, 0, 0], [5, 5, 0, 0], z[0], z[0]])]},
            whole={"scene": [6]}),
        Row(_image([[0] * 4, [0, 250, 250, 0], [0] * 4, [0, 0, 0, 200]]),
            layers={"object": [_grid([z[0], [0, 2, 2, 2], z[0], [0, 0, 1, 1]])],
                    "color": [_grid([z[0], [0, 5, 5, 0], z[0], z[0]])]},
            whole={"scene": [6]}),
        Row(_image([[100] * 4] * 4), layers={"object": [_grid([[1] * 4] * 4)]},
            whole={"texture": [7, 8]}),
        Row(_image(z), layers={"object": [_grid([[2, 0, 0, 0], z[0], z[0], z[0]])]},
            whole={"texture": [8]}),
    ]


@pytest.fixture
def four_images(tmp_path: Path) -> Path:
    """A Broden directory with the 4-image fixture."""
    return write_broden(tmp_path / "broden4", four_image_rows(), FIXTURE_LABELS)


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    """One moto S3 server for the session (see :mod:`fixtures.s3`)."""
    s3 = LocalS3.start()
    yield s3
    s3.stop()
