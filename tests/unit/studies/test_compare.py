"""``ray-dissect compare``: the shares of unspecialized and weakly specialized units per range
are the hand-counted ones on two job directories with planted formulas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ray_dissect.cli import app
from ray_dissect.errors import SpecError
from ray_dissect.explain.formula import parse
from ray_dissect.job.layout import JobDir
from ray_dissect.records.build import formula_node
from ray_dissect.records.io import write_jsonl
from ray_dissect.records.schema import Explanation, Provenance, UnitRecord
from ray_dissect.records.studies import CompareReport
from ray_dissect.spec import parse_spec
from ray_dissect.studies.compare import compare_jobs

NAMES = ("", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l")
# Ten units, two ranges each (None: no formula). top_k = ceil(0.2 * 10) = 2.
BASELINE = [
    ("a AND b", "a AND b"), ("a AND b", "c"), ("c", "c OR d"), ("(a OR c) AND d", "c OR d"),
    ("d AND e", "f"), ("g", "h"), ("i", "j"), ("k", "l"), ("e AND f", "g AND h"), ("i", None)]
# Counts: "a AND b" 3, "c" 2 (first seen at unit 1), "c OR d" 2 (unit 2), "i" 2 (unit 6):
# the defaults are "a AND b" and "c"; the default left operands of the formulas seen more than
# once, commonest first: "a" ("a AND b"), none for "c" or "i", "c" ("c OR d"): ["a", "c"].
TRAINED = [
    ("a AND b", "a AND e"),    # range 0 unspecialized; range 1 weak (left a)
    ("c", "c AND e"),          # range 0 unspecialized; range 1 weak (left c)
    ("b AND c", "(a OR c) AND d"),  # neither (left b; left "a OR c" is not a default)
    ("c OR d", "e"),           # range 0 weak (left c, though "c OR d" is not a default)
    ("e", None), ("f", "g"), ("NOT a", "h"), ("i AND j", "j"), ("k", "l"), ("l", "k")]
WANT = {0: (2, 1), 1: (0, 2)}  # range: (unspecialized, weakly specialized) units of 10


def _explanation(r: int, text: str | None) -> Explanation:
    f = parse(text, NAMES) if text else None
    return Explanation(
        range_index=r, lo=float(r), hi=float(r + 1), inclusive=True, mask_pixels=1,
        formula=formula_node(f, NAMES) if f else None, text=text, iou=0.1, metrics=None,
        visited=1, best_unary=None, beam=[])


def _job(root: Path, formulas: list[tuple[str | None, str | None]], layer: str = "layer4",
         kind: str = "clustered") -> Path:
    spec = parse_spec({"model": {"name": "resnet18"}, "layers": [layer],
                       "dataset": {"root": "/data/x"}, "method": {"kind": kind}})
    job = JobDir(root)
    job.make()
    (root / "spec.json").write_text(spec.model_dump_json())
    provenance = Provenance(job="j", spec_hash=f"hash-{root.name}", package_version="0")
    write_jsonl(job.records(layer), [UnitRecord(
        layer=layer, unit=u, threshold=1.0, label=None, interpretable=False, per_category={},
        top=[], mask_pixels=0, nonfinite=0, provenance=provenance,
        explanations=[_explanation(r, t) for r, t in enumerate(pair)])
        for u, pair in enumerate(formulas)])
    return root


def test_shares_are_the_hand_counted_ones(tmp_path: Path) -> None:
    """Per range: unspecialized and weakly specialized counts over all 10 units."""
    report = compare_jobs(_job(tmp_path / "trained", TRAINED), _job(tmp_path / "base", BASELINE))
    (layer,) = report.layers
    assert (layer.layer, layer.units, layer.top_k) == ("layer4", 10, 2)
    assert [(d.text, d.count) for d in layer.default_formulas] == [("a AND b", 3), ("c", 2)]
    assert layer.default_left == ["a", "c"]
    got = {r.range_index: (r.unspecialized, r.weakly_specialized) for r in layer.ranges}
    assert got == WANT
    for r in layer.ranges:
        assert r.unspecialized_share == WANT[r.range_index][0] / 10
        assert r.weakly_specialized_share == WANT[r.range_index][1] / 10
    assert (report.trained_spec_hash, report.baseline_spec_hash) == ("hash-trained", "hash-base")


def test_cli_writes_the_report_under_the_trained_job(tmp_path: Path) -> None:
    """`compare` writes a valid CompareReport to TRAINED/studies/compare.json (or --out)."""
    trained, base = _job(tmp_path / "trained", TRAINED), _job(tmp_path / "base", BASELINE)
    result = CliRunner().invoke(app, ["compare", str(trained), str(base), "--no-visual"])
    assert result.exit_code == 0, result.output
    report = CompareReport.model_validate_json((trained / "studies" / "compare.json").read_text())
    assert report.layers[0].ranges[1].weakly_specialized == 2
    out = tmp_path / "elsewhere" / "c.json"
    result = CliRunner().invoke(app, ["compare", str(trained), str(base), "--out", str(out),
                                        "--no-visual"])
    assert result.exit_code == 0 and json.loads(out.read_text())["schema_version"] == 4


def test_jobs_without_formulas_or_shared_layers_are_refused(tmp_path: Path) -> None:
    """A netdissect job has no formulas; jobs of different layers share nothing to compare."""
    base = _job(tmp_path / "base", BASELINE)
    with pytest.raises(SpecError, match="has no formulas"):
        compare_jobs(_job(tmp_path / "nd", TRAINED, kind="netdissect"), base)
    with pytest.raises(SpecError, match="share no layer"):
        compare_jobs(_job(tmp_path / "other", TRAINED, layer="layer3"), base)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "nope"), str(base)])
    assert result.exit_code == 2 and "not a job directory" in result.output
