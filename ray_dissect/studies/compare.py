"""Trained against baseline explanations (CCE's ``analyze_activations``), over all units.

The baseline is the same architecture dissected with another model, typically random-init.
Per layer, with U units and k = ceil(0.2 U):

- the *default formulas* are the k commonest baseline formulas, counted over every (unit,
  range) explanation (ties: the formula seen first in unit, range order, as ``Counter``);
- the *default left operands* (CCE's "default two") are the distinct left operands of the
  baseline formulas that occur more than once, commonest formula first, at most k;
- a trained unit's range is *unspecialized* when its formula is a default formula, else
  *weakly specialized* when its left operand is a default left operand;
- per range index, each share is that count over U.

Fixes of the seed: ranges are sorted by lower bound (the records' ``range_index``) instead
of k-means label order; a formula without a left operand (one concept, or a top-level NOT)
is never weakly specialized instead of raising; every unit counts, not units 0-10.
Formulas are compared by their text, printed from their trees with the records' concept
names, so both jobs must use the same concept dataset.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.explain.formula import from_dict, leaves, to_string
from ray_dissect.job.layout import JobDir
from ray_dissect.records.io import read_unit_records
from ray_dissect.records.schema import UnitRecord
from ray_dissect.records.studies import (
    CompareReport,
    DefaultFormula,
    LayerComparison,
    RangeSpecialization,
)
from ray_dissect.spec import JobSpec
from ray_dissect.storage import AnyPath

DEFAULT_SHARE = 0.2


def formula_text(node: dict[str, Any]) -> str:
    """The text of a record's formula tree (``Explanation.formula`` dumped), with the concept
    names its leaves carry."""
    names: dict[int, str] = {}

    def collect(n: dict[str, Any]) -> None:
        if n["op"] == "leaf":
            names[n["concept"]] = n["name"]
        for key in ("child", "left", "right"):
            if key in n:
                collect(n[key])

    collect(node)
    f = from_dict(node)
    table = [names.get(i, str(i)) for i in range(max(leaves(f)) + 1)]
    return to_string(f, table)


def left_text(node: dict[str, Any]) -> str | None:
    """The text of a formula's left operand (AND, OR); None for a concept or a NOT."""
    return formula_text(node["left"]) if node["op"] in ("and", "or") else None


def explained(records: Sequence[UnitRecord]) -> list[tuple[int, int, dict[str, Any]]]:
    """(unit, range index, formula tree) of every explanation with a formula, in unit then
    range order."""
    out = []
    for rec in sorted(records, key=lambda r: r.unit):
        for exp in sorted(rec.explanations, key=lambda e: e.range_index):
            if exp.formula is not None:
                out.append((rec.unit, exp.range_index, exp.formula.model_dump()))
    return out


def defaults(baseline: Sequence[UnitRecord], units: int
             ) -> tuple[list[DefaultFormula], list[str]]:
    """The baseline's default formulas (with counts) and default left operands."""
    k = math.ceil(units * DEFAULT_SHARE)
    formulas = [(formula_text(f), left_text(f)) for _, _, f in explained(baseline)]
    counts = Counter(text for text, _ in formulas)
    left_of = dict(formulas)
    top = [DefaultFormula(text=t, count=n) for t, n in counts.most_common(k)]
    lefts: list[str] = []
    for text, n in counts.most_common():
        if len(lefts) >= k or n <= 1:
            break
        left = left_of[text]
        if left is not None and left not in lefts:
            lefts.append(left)
    return top, lefts


def compare_layer(layer: str, trained: Sequence[UnitRecord], baseline: Sequence[UnitRecord],
                  units: int) -> LayerComparison:
    """The comparison of one layer of ``units`` units."""
    top, lefts = defaults(baseline, units)
    default_texts = {d.text for d in top}
    unspecialized: Counter[int] = Counter()
    weak: Counter[int] = Counter()
    for _, r, f in explained(trained):
        if formula_text(f) in default_texts:
            unspecialized[r] += 1
        elif left_text(f) in lefts:
            weak[r] += 1
    indices = sorted({e.range_index for rec in trained for e in rec.explanations})
    ranges = [RangeSpecialization(
        range_index=r, unspecialized=unspecialized[r], weakly_specialized=weak[r],
        unspecialized_share=unspecialized[r] / units if units else 0.0,
        weakly_specialized_share=weak[r] / units if units else 0.0) for r in indices]
    return LayerComparison(layer=layer, units=units, top_k=math.ceil(units * DEFAULT_SHARE),
                           default_formulas=top, default_left=lefts, ranges=ranges)


def _job(root: AnyPath) -> tuple[JobSpec, dict[str, list[UnitRecord]]]:
    """A finished job's spec and records per layer.

    Raises:
        SpecError: not a job directory, no records yet, or no formulas (method netdissect).
    """
    job = JobDir(root)
    spec_file = root / "spec.json"
    if not spec_file.is_file():
        raise SpecError(f"{str(root)!r} is not a job directory (no spec.json)",
                        hint="give the --out directory of a `ray-dissect run`")
    spec = JobSpec.model_validate_json(storage.read_text(spec_file))
    if spec.method.kind not in ("compositional", "clustered"):
        raise SpecError(f"job {str(root)!r} has no formulas", given=spec.method.kind,
                        expected="method compositional or clustered",
                        hint="compare runs on explained jobs of both models; "
                             "--no-formulas draws the visual comparison only")
    records = {}
    for layer in spec.layers:
        if not job.records(layer).is_file():
            raise SpecError(f"job {str(root)!r} has no records of layer {layer!r}",
                            hint=f"finish it first: `ray-dissect resume {root}`")
        records[layer] = list(read_unit_records(job.records(layer)))
    return spec, records


def compare_jobs(trained: str | AnyPath, baseline: str | AnyPath) -> CompareReport:
    """Compare every layer the two finished jobs share (in the trained job's order).

    Raises:
        SpecError: a directory is not a finished explained job, the jobs share no layer, or a
            shared layer has a different number of units.
    """
    t_root, b_root = storage.location(trained), storage.location(baseline)
    t_spec, t_records = _job(t_root)
    b_spec, b_records = _job(b_root)
    shared = [layer for layer in t_spec.layers if layer in b_records]
    if not shared:
        raise SpecError("the two jobs share no layer", given=(t_spec.layers, b_spec.layers),
                        hint="dissect the same layers of both models")
    layers = []
    for layer in shared:
        units = len(t_records[layer])
        if len(b_records[layer]) != units:
            raise SpecError(f"layer {layer!r} has {units} units in the trained job and "
                            f"{len(b_records[layer])} in the baseline",
                            hint="compare two models of the same architecture")
        layers.append(compare_layer(layer, t_records[layer], b_records[layer], units))
    return CompareReport(trained=str(t_root), baseline=str(b_root),
                         trained_spec_hash=_spec_hash(t_records),
                         baseline_spec_hash=_spec_hash(b_records), layers=layers)


def _spec_hash(records: dict[str, list[UnitRecord]]) -> str:
    """The spec hash the records carry (their provenance)."""
    first = next((r for layer in records.values() for r in layer), None)
    return first.provenance.spec_hash if first else ""
