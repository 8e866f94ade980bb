"""Sub-specs of what a job shows beyond its labels: the top images of units and ranges."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ray_dissect.spec.base import ADDED_LATER, Frozen


class TopImagesSpec(Frozen):
    """The images each record names (the ``top_images`` stage; changing this redoes only it).

    Per unit, the ``k`` images with the largest spatial maximum of its map (``score: mean``:
    the largest spatial mean, silver-system's ranking); per explained
    activation range, the ``k`` images with the most pixels of the range's mask (the mask that
    was scored), and ``samples`` images drawn at random among those with any such pixel (seeded
    by ``seed``, unit and range), shown beside them against cherry-picking. Ties go to the
    lower image index.
    """

    k: Annotated[int, Field(ge=1, le=100)] = 10
    """Top images per unit and per explained range."""
    samples: Annotated[int, Field(ge=0, le=100)] = 3
    """Random images per range among those with any mask pixel (against cherry-picking)."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Seed of those samples (with the unit and range)."""
    score: Annotated[Literal["max", "mean"], ADDED_LATER] = "max"
    """What ranks a unit's top images: the map's spatial `max`, or its `mean` (silver-system)."""
