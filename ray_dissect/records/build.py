"""Building records from stage results: concept scores, formulas, explanations, unit records
and per-layer summaries."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ray_dissect.datasets.base import Vocabulary
from ray_dissect.explain.formula import Formula, to_dict, to_string
from ray_dissect.explain.netdissect import UnitLabels
from ray_dissect.explain.optimal import Certificate as FoundCertificate
from ray_dissect.explain.ranges import RangeExplanation
from ray_dissect.records.schema import (
    BeamEntry,
    BeamStart,
    Certificate,
    ConceptCount,
    ConceptScore,
    Explanation,
    FormulaCount,
    LayerSummary,
    Metrics,
    Provenance,
    UnitRecord,
)
from ray_dissect.records.studies import Concept


def concept_score(vocab: Vocabulary, number: int, iou: float) -> ConceptScore:
    """A :class:`ConceptScore` for label ``number``."""
    return ConceptScore(name=vocab.names[number], number=number,
                        category=vocab.category_of(number), iou=iou)


def concept_of(vocab: Vocabulary, number: int) -> Concept:
    """A :class:`Concept` (name, number, category) for label ``number``."""
    return Concept(name=vocab.names[number], number=number, category=vocab.category_of(number))


def formula_node(f: Formula, names: Sequence[str]) -> dict[str, Any]:
    """The record form of a formula tree: ``to_dict`` plus each leaf's concept name."""
    def named(node: dict[str, Any]) -> dict[str, Any]:
        if node["op"] == "leaf":
            return {**node, "name": names[node["concept"]]}
        return {k: named(v) if isinstance(v, dict) else v for k, v in node.items()}

    return named(to_dict(f))


def explanation_record(index: int, exp: RangeExplanation, vocab: Vocabulary) -> Explanation:
    """The record of one range's search result."""
    res, best = exp.result, exp.best
    unary = res.best_unary
    metrics = None
    if exp.metrics is not None:
        m = exp.metrics
        metrics = Metrics(activation_coverage=m.activation_coverage,
                          detection_accuracy=m.detection_accuracy,
                          samples_coverage=m.samples_coverage,
                          explanation_coverage=m.explanation_coverage)
    return Explanation(
        range_index=index, lo=exp.lo, hi=exp.hi if math.isfinite(exp.hi) else None,
        inclusive=exp.inclusive, mask_pixels=exp.mask_pixels,
        formula=formula_node(best.formula, vocab.names) if best else None,
        text=to_string(best.formula, vocab.names) if best else None,
        iou=best.iou if best else 0.0, metrics=metrics,
        visited=exp.certificate.visited if exp.certificate else res.visited,
        best_unary=(concept_score(vocab, unary.formula.concept, unary.iou)  # type: ignore[union-attr]
                    if unary else None),
        beam=[BeamEntry(text=to_string(s.formula, vocab.names), iou=s.iou) for s in res.beam],
        certificate=certificate_record(exp.certificate, vocab) if exp.certificate else None)


def certificate_record(cert: FoundCertificate, vocab: Vocabulary) -> Certificate:
    """The record of a search's certificate (the beam's start as text for ``optimal``)."""
    start = None
    if cert.search == "optimal":
        s = cert.start
        start = BeamStart(text=to_string(s.formula, vocab.names) if s else None,
                          iou=s.iou if s else 0.0)
    return Certificate(search=cert.search,
                       optimal=cert.optimal, upper_bound=min(1.0, cert.upper_bound),
                       expanded=cert.expanded, seconds=cert.seconds, beam=start)


def unit_record(layer: str, unit: int, labels: UnitLabels, threshold: float, nonfinite: int,
                area: float, iou_threshold: float, explanations: list[RangeExplanation] | None,
                vocab: Vocabulary, provenance: Provenance) -> UnitRecord:
    """The record of one unit from its NetDissect labels and range explanations."""
    best = labels.best
    return UnitRecord(
        layer=layer, unit=unit, threshold=threshold if math.isfinite(threshold) else None,
        label=concept_score(vocab, *best) if best[0] else None,
        interpretable=bool(best[0]) and best[1] >= iou_threshold,
        per_category={c: concept_score(vocab, *v) for c, v in labels.per_category.items()},
        top=[concept_score(vocab, *t) for t in labels.top], mask_pixels=int(area),
        nonfinite=nonfinite,
        explanations=[explanation_record(i, e, vocab) for i, e in enumerate(explanations or [])],
        provenance=provenance)


def summarize_layer(layer: str, records: list[UnitRecord], iou_threshold: float | None
                    ) -> LayerSummary:
    """Totals of one layer: interpretable units, concepts, categories, frequent formulas."""
    good = [r for r in records if r.interpretable and r.label is not None]
    counts = Counter((r.label.name, r.label.category) for r in good if r.label)
    explained = [e for r in records for e in r.explanations
                 if e.text is not None and iou_threshold is not None and e.iou >= iou_threshold]
    formulas = Counter(e.text for e in explained)
    return LayerSummary(
        layer=layer, units=len(records), interpretable=len(good),
        unique_concepts=len(counts),
        by_category=dict(Counter(r.label.category for r in good if r.label)),
        top_concepts=[ConceptCount(name=n, category=c, units=k)
                      for (n, c), k in counts.most_common(10)],
        units_with_nonfinite=sum(1 for r in records if r.nonfinite),
        explained_ranges=len(explained),
        top_formulas=[FormulaCount(text=str(t), ranges=k) for t, k in formulas.most_common(10)])
