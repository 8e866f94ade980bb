"""The analyses sub-specs: defaults, field-named errors, and hashes of specs that omit them."""

from __future__ import annotations

import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import parse_spec

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/data/x"}}
ISSUE = {  # the issue's example, verbatim
    "receptive_fields": {"layers": ["features.10"], "units": "all", "top_k": 10, "occluder": 11,
                         "stride": 3},
    "prism": {"layer": "features.28", "ge_layers": ["features.4", "features.9"],
              "gradual_extrapolation": True, "quantize": "none", "split_rgb": False,
              "clusters": 5}}


def test_issue_example_and_defaults() -> None:
    """The issue's example parses; left-out fields take the documented defaults."""
    analyses = parse_spec({**BASE, "analyses": ISSUE}).analyses
    rf, prism = analyses.receptive_fields, analyses.prism
    assert rf is not None and prism is not None
    assert (rf.units, rf.top_k, rf.occluder, rf.stride, rf.fill, rf.seed) == (
        "all", 10, 11, 3, "noise", 0)
    assert (rf.cover_remainder, rf.compat, rf.batch_size, rf.images_per_task) == (
        False, False, None, 4)
    assert prism.ge_layers == ("features.4", "features.9") and prism.clusters == 5
    assert (prism.limit, prism.seed, prism.quantize) == (64, 0, "none")
    small = parse_spec({**BASE, "analyses": {"receptive_fields": {
        "layers": ["layer4"], "units": [3, 0], "fill": 0}}}).analyses.receptive_fields
    assert small is not None and small.units == (3, 0) and small.fill == 0.0


@pytest.mark.parametrize(("section", "field"), [
    ({"receptive_fields": {"layers": ["a"], "units": [1, 1]}},
     "analyses.receptive_fields.units"),
    ({"receptive_fields": {"layers": ["a"], "units": "some"}},
     "analyses.receptive_fields.units"),
    ({"receptive_fields": {"layers": ["a"], "fill": 2}}, "analyses.receptive_fields.fill"),
    ({"receptive_fields": {"layers": []}}, "analyses.receptive_fields.layers"),
    ({"receptive_fields": {"layers": ["a"], "stride": 0}}, "analyses.receptive_fields.stride"),
    ({"receptive_fields": {"units": "all"}}, "analyses.receptive_fields.layers"),
    ({"prism": {"layer": "a"}}, "analyses.prism"),
    ({"prism": {"layer": "a", "ge_layers": ["a"]}}, "analyses.prism"),
    ({"prism": {"layer": "a", "ge_layers": ["b", "b"]}}, "analyses.prism.ge_layers"),
    ({"prism": {"layer": "a", "gradual_extrapolation": False, "quantize": "some"}},
     "analyses.prism.quantize"),
    ({"prism": {"layer": "a", "gradual_extrapolation": False, "limit": 0}},
     "analyses.prism.limit"),
    ({"attribution": {"target": -1}}, "analyses.attribution.target"),
])
def test_bad_sections_name_the_field(section: dict, field: str) -> None:
    """Each bad value raises a one-line SpecError naming exactly the field (no union tags)."""
    with pytest.raises(SpecError) as err:
        parse_spec({**BASE, "analyses": section}, source="job.yaml")
    assert f"field '{field}': " in str(err.value) and "\n" not in str(err.value)


def test_specs_without_the_new_sections_hash_as_before() -> None:
    """The new sections are left out of the hashed data while unset (old directories resume)."""
    spec = parse_spec({**BASE, "analyses": {"attribution": {"methods": ["saliency"]}}})
    assert set(spec.hash_data()["analyses"]) == {"attribution"}
    assert "analyses" not in parse_spec(BASE).hash_data()
    with_rf = parse_spec({**BASE, "analyses": {"receptive_fields": {"layers": ["layer4"]}}})
    assert with_rf.spec_hash() != parse_spec(BASE).spec_hash()
