"""``method.search`` / ``search_budget``: defaults, refusal, hashes of specs that omit them."""

from __future__ import annotations

import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import parse_spec
from ray_dissect.spec.base import hashed_data

BASE = {"model": {"name": "resnet18"}, "layers": ["layer4"], "dataset": {"root": "/data/x"}}


@pytest.mark.parametrize("kind", ["compositional", "clustered"])
def test_default_is_beam_and_keeps_the_hash(kind: str) -> None:
    """A spec saying ``search: beam`` hashes as one written before the field existed."""
    old = parse_spec({**BASE, "method": {"kind": kind}})
    said = parse_spec({**BASE, "method": {"kind": kind, "search": "beam"}})
    assert old.method.search == "beam" and old.method.search_budget is None  # type: ignore[union-attr]
    assert "search" not in hashed_data(old)["method"]
    assert "search_budget" not in hashed_data(old)["method"]
    assert said.spec_hash() == old.spec_hash()


def test_optimal_and_budget_change_the_hash() -> None:
    """Optimal explanations are other results: another hash, and the budget too."""
    base = parse_spec({**BASE, "method": {"kind": "clustered"}}).spec_hash()
    opt = parse_spec({**BASE, "method": {"kind": "clustered", "search": "optimal"}})
    budget = parse_spec({**BASE, "method": {"kind": "clustered", "search": "optimal",
                                            "search_budget": {"seconds": 60}}})
    assert len({base, opt.spec_hash(), budget.spec_hash()}) == 3
    assert budget.method.search_budget.seconds == 60  # type: ignore[union-attr]


@pytest.mark.parametrize("method", [
    {"kind": "compositional", "search_budget": {"seconds": 1}},
    {"kind": "compositional", "search": "exhaustive"},
    {"kind": "clustered", "search": "optimal", "search_budget": {"seconds": 0}},
    {"kind": "clustered", "search": "optimal", "search_budget": {"nodes": 10, "cpu": 1}},
    {"kind": "netdissect", "search": "optimal"}])
def test_bad_search_is_refused(method: dict) -> None:
    """A budget without optimal, an unknown search, a non-positive or unknown limit, and
    ``search`` on a method without formulas are refused before any work."""
    with pytest.raises(SpecError):
        parse_spec({**BASE, "method": method})
