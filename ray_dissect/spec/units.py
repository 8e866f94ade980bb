"""The top-level ``units:`` field: which units of every layer a job dissects (CCE's
``--random_units``).

``all`` (the default) keeps every unit. A list of unit indices keeps those units of every
layer. ``{random: N, seed: S}`` keeps, per layer of U units, the N units drawn without
replacement by ``numpy.random.default_rng([S, crc32(layer name)]).choice(U, N,
replace=False)``: deterministic per seed and layer name, different between layers of the
same width. The chosen units are kept in ascending order.
"""

from __future__ import annotations

import zlib
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from ray_dissect.errors import SpecError
from ray_dissect.spec.base import UNIQUE, Frozen


class RandomUnits(Frozen):
    """``{random: N, seed: S}``: N units per layer drawn with seed S (see the module doc)."""

    random: Annotated[int, Field(ge=1)]
    """How many units of each layer to draw (at most the layer's width)."""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    """Seed of the draw (with the layer's name, so each layer gets its own sample)."""


UnitList = Annotated[tuple[Annotated[int, Field(ge=0)], ...], Field(min_length=1), UNIQUE]
UnitsSpec = Literal["all"] | UnitList | RandomUnits


def selected_units(units: UnitsSpec, layer: str, width: int) -> np.ndarray:
    """(k,) int64 ascending indices of ``layer``'s chosen units, out of its ``width`` units.

    Raises:
        SpecError: a listed index is not below ``width``, or ``random`` asks for more units
            than the layer has.
    """
    if units == "all":
        return np.arange(width, dtype=np.int64)
    if isinstance(units, RandomUnits):
        if units.random > width:
            raise SpecError(f"job spec field 'units.random': {units.random} units of layer "
                            f"{layer!r}", expected=f"at most its {width} units",
                            hint="lower random")
        rng = np.random.default_rng([units.seed, zlib.crc32(layer.encode())])
        return np.sort(rng.choice(width, units.random, replace=False)).astype(np.int64)
    if max(units) >= width:
        raise SpecError(f"job spec field 'units': unit {max(units)} of layer {layer!r}",
                        expected=f"indices below its {width} units",
                        hint="list units that every layer has")
    return np.array(sorted(units), dtype=np.int64)
