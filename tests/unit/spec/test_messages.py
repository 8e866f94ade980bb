"""Spec errors in plain words, with the close match of a near miss."""

from __future__ import annotations

import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import parse_spec

BASE = {"name": "x", "model": {"name": "resnet18"}, "layers": ["layer4"],
        "dataset": {"root": "/tmp"}}


@pytest.mark.parametrize(("change", "want"), [
    ({"method": {"kind": "compositonal"}},
     "field 'method.kind': must be one of 'netdissect', 'compositional', 'clustered', 'none', "
     "got 'compositonal' (did you mean 'compositional'?)"),
    ({"dataset": {"root": "/tmp", "format": "brodn"}},
     "field 'dataset.format': must be one of 'broden', 'coco', 'images', 'pascal_part', got "
     "'brodn' (did you mean 'broden'?)"),
    ({"method": {"kind": "netdissect", "denominator": "plian"}},
     "field 'method.denominator': must be one of 'plain', 'category', got 'plian' "
     "(did you mean 'plain'?)"),
    ({"methd": {"kind": "netdissect"}}, "field 'methd': not a known field (did you mean "
                                        "'method'?)"),
    ({"method": {"kind": "zzz"}}, "got 'zzz'. Hint"),
])
def test_spec_errors_say_what_was_given_and_what_is_allowed(change: dict, want: str) -> None:
    """No pydantic wording ("Input tag", "found using tag()", "Extra inputs"); a near miss
    names its close match, a far one none."""
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, **change}, source="job.yaml")
    text = str(err.value)
    assert want in text and "Input tag" not in text and "tag()" not in text
    assert "Extra inputs" not in text and text.count("\n") == 0
