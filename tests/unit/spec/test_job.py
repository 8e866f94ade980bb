"""Job specs are validated at the boundary with one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import JobSpec, load_spec, parse_spec

GOOD = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "data/x"}}


def _with(**changes: object) -> dict:
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = spec
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return spec


def test_defaults_and_relative_root(tmp_path: Path) -> None:
    """Defaults follow NetDissect; relative paths resolve against the given base."""
    spec = parse_spec(GOOD, base=tmp_path)
    assert spec.method.quantile == 0.005 and spec.method.iou_threshold == 0.04
    assert spec.dataset.root == str(tmp_path / "data" / "x")
    assert spec.model.preprocess.mean == (0.485, 0.456, 0.406)


@pytest.mark.parametrize(("data", "field"), [
    (_with(method__quantile=-0.1), "method.quantile"),
    (_with(extra_key=1), "extra_key"),
    (_with(resources__batch_size=48, resources__shard_images=100), "resources"),
    (_with(model__factory="a.py:f"), "model"),
    (_with(layers=[]), "layers"),
    (_with(method__kind="bogus"), "method"),
    (_with(method__kind="clustered", method__clusters=0), "method.clusters"),
    (_with(method__kind="compositional", method__clusters=3), "method.clusters"),
])
def test_bad_specs_name_the_field(data: dict, field: str) -> None:
    """Each bad spec raises SpecError whose one-line message quotes the field."""
    with pytest.raises(SpecError) as err:
        parse_spec(data, source="job.yaml")
    message = str(err.value)
    assert f"field '{field}" in message and "\n" not in message
    assert err.value.exit_code == 2


def test_spec_hash_is_stable_and_sensitive() -> None:
    """Equal specs hash equal; any change changes the hash."""
    a, b = parse_spec(GOOD), parse_spec(dict(GOOD))
    assert a.spec_hash() == b.spec_hash()
    assert parse_spec(_with(method__quantile=0.01)).spec_hash() != a.spec_hash()
    assert JobSpec.model_validate_json(a.model_dump_json()) == a
    assert parse_spec(_with(resources__actors=7)).spec_hash() == a.spec_hash()
    assert parse_spec(_with(resources__batch_size=16)).spec_hash() != a.spec_hash()


def test_load_spec_reports_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    """Missing files and YAML syntax errors are SpecErrors too."""
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- 1\n")
    with pytest.raises(SpecError, match="not a mapping"):
        load_spec(bad)


@pytest.mark.parametrize("name", ["demo", "compositional", "clustered"])
def test_shipped_jobs_are_valid(name: str) -> None:
    """Every job in jobs/ validates, with the method it is named for."""
    spec = load_spec(Path(__file__).parents[3] / "jobs" / f"{name}.yaml")
    assert spec.model.factory == "ray_dissect.zoo:efficientnet_lite0"
    assert spec.method.kind == ("netdissect" if name == "demo" else name)
