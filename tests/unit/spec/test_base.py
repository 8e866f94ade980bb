"""What the spec hash covers: later-added fields count only when set."""

from __future__ import annotations

from typing import Annotated

from ray_dissect.spec import parse_spec
from ray_dissect.spec.base import ADDED_LATER, Frozen, digest, hashed_data


class Inner(Frozen):
    old: int = 1
    new: Annotated[int, ADDED_LATER] = 5


class Outer(Frozen):
    inner: Inner = Inner()
    extra: Annotated[tuple[str, ...], ADDED_LATER] = ()


def test_later_fields_at_their_defaults_are_left_out() -> None:
    """Defaults of marked fields vanish at every depth; unmarked ones stay."""
    assert hashed_data(Outer()) == {"inner": {"old": 1}}


def test_later_fields_count_once_set() -> None:
    """A marked field that differs from its default is hashed like any other."""
    assert hashed_data(Outer(inner=Inner(new=6), extra=("a",))) == {
        "inner": {"old": 1, "new": 6}, "extra": ["a"]}
    assert digest(hashed_data(Outer())) != digest(hashed_data(Outer(inner=Inner(new=6))))


def test_spec_hash_is_the_digest_of_its_hash_data() -> None:
    """The spec hash is the canonical-JSON sha256 prefix of hash_data, which has no
    scheduling fields."""
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": ["layer4"],
                       "dataset": {"root": "/d"}, "resources": {"actors": 7}})
    data = spec.hash_data()
    assert "actors" not in data["resources"] and spec.spec_hash() == digest(data)
    assert len(spec.spec_hash()) == 16


def test_repeated_values_are_refused_naming_the_field() -> None:
    """layers, attribution methods and sweep quantiles must not repeat, with one line naming
    the field and the repeated value."""
    import pytest

    from ray_dissect.errors import SpecError

    base = {"model": {"name": "resnet18"}, "dataset": {"root": "/d"}}
    cases = [({"layers": ["layer4", "layer4"]}, "layers"),
             ({"layers": ["fc"], "studies": {"threshold_sweep": {"quantiles": [0.1, 0.1]}}},
              "studies.threshold_sweep.quantiles"),
             ({"layers": ["fc"], "analyses": {"attribution": {
                 "methods": ["saliency", "saliency"]}}}, "analyses.attribution.methods")]
    for extra, field in cases:
        with pytest.raises(SpecError, match=rf"field '{field}'.*repeated") as err:
            parse_spec({**base, **extra})
        assert "\n" not in str(err.value)
