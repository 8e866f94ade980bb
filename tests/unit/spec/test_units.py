"""The ``units:`` field: default out of the hash, a list or a seeded random draw per layer."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import parse_spec
from ray_dissect.spec.units import RandomUnits, selected_units

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/tmp/x"}}


def test_all_is_the_default_and_leaves_the_hash_unchanged() -> None:
    plain, explicit = parse_spec(BASE), parse_spec({**BASE, "units": "all"})
    assert plain.units == "all"
    assert plain.spec_hash() == explicit.spec_hash()
    assert "units" not in plain.hash_data()
    assert parse_spec({**BASE, "units": [3]}).spec_hash() != plain.spec_hash()


def test_a_list_is_sorted_and_checked_against_the_width() -> None:
    np.testing.assert_array_equal(selected_units((7, 2, 5), "a", 8), [2, 5, 7])
    with pytest.raises(SpecError, match="unit 8 of layer 'a'"):
        selected_units((2, 8), "a", 8)


@pytest.mark.parametrize("bad", [[], [1, 1], [-1], {"random": 0}, {"random": 2, "x": 1}])
def test_bad_values_are_refused(bad: object) -> None:
    with pytest.raises(SpecError, match="field 'units"):
        parse_spec({**BASE, "units": bad})


def test_random_is_the_documented_seeded_draw() -> None:
    """numpy default_rng([seed, crc32(layer)]).choice(U, N, replace=False), sorted."""
    units = RandomUnits(random=5, seed=3)
    got = selected_units(units, "layer4", 512)
    rng = np.random.default_rng([3, zlib.crc32(b"layer4")])
    np.testing.assert_array_equal(got, np.sort(rng.choice(512, 5, replace=False)))
    np.testing.assert_array_equal(got, selected_units(units, "layer4", 512))
    assert len(set(got.tolist())) == 5 and got.max() < 512
    assert not np.array_equal(got, selected_units(RandomUnits(random=5, seed=4), "layer4", 512))
    assert not np.array_equal(got, selected_units(units, "layer3", 512))
    with pytest.raises(SpecError, match="6 units of layer 'l'"):
        selected_units(RandomUnits(random=6), "l", 5)
