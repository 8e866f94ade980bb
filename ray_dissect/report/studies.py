"""The studies page (``studies.html``): contexts from ``DIR/studies/*.jsonl`` and
``DIR/studies/compare.json``.

Per layer, what each study that ran found: the category shares of the labels against the
quantile and the units whose label changes across quantiles (``threshold_sweep``); the flip
fraction per range index with the per-unit spread (``ranges_importance``); the probability
drop and flip rate of each label group on images with and without its concept
(``unit_ablation``); per concept the Pearson r of IoU against the blackout change, and the
scatter of the best-supported concepts (``concept_blackout``). Then, when ``ray-dissect
compare`` wrote ``compare.json``, per layer the shares of unspecialized and weakly
specialized units per range and the baseline's default formulas. The page (and its nav
link) exists only when some study row or ``compare.json`` is there.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from ray_dissect import storage
from ray_dissect.records.io import read_jsonl
from ray_dissect.records.studies import (
    CompareReport,
    ConceptBlackoutRow,
    HeuristicsRow,
    LayerComparison,
    RangesImportanceRow,
    ThresholdSweepRow,
    UnitAblationRow,
)
from ray_dissect.report import study_plots as sp
from ray_dissect.report.pages import ReportPage, Site
from ray_dissect.report.plots import Plot, category_rank, fix
from ray_dissect.results import JobResults
from ray_dissect.storage import AnyPath

STUDY_ROWS: dict[str, type[Any]] = {
    "threshold_sweep": ThresholdSweepRow, "ranges_importance": RangesImportanceRow,
    "unit_ablation": UnitAblationRow, "concept_blackout": ConceptBlackoutRow,
    "heuristics": HeuristicsRow}
MAX_CHANGES = 200
MAX_CURVES = 24  # per-unit IoU curves drawn per layer (the units with the highest IoU)
MAX_GROUPS = 40
T = TypeVar("T")
log = logging.getLogger(__name__)
BLACKOUT_PLOTS = 12


def compare_path(results: JobResults) -> AnyPath:
    """``DIR/studies/compare.json``, where ``ray-dissect compare`` writes by default."""
    return results.root / "studies" / "compare.json"


def study_rows(results: JobResults, name: str) -> list[Any]:
    """The validated rows of ``DIR/studies/<name>.jsonl`` ([] when the study has not run)."""
    path = results.job.study(name)
    return list(read_jsonl(path, STUDY_ROWS[name])) if path.exists() else []


def read_compare(results: JobResults) -> CompareReport | None:
    """``compare.json`` of the job, None when absent."""
    path = compare_path(results)
    if not path.exists():
        return None
    return CompareReport.model_validate_json(storage.read_text(path))


def has_studies(results: JobResults) -> bool:
    """Whether the report gets a studies page: a study file or ``compare.json`` exists."""
    return compare_path(results).exists() or any(
        results.job.study(name).exists() for name in STUDY_ROWS)


@dataclass(frozen=True)
class Table:
    """A data table of the page: header, rows, and how many rows were left out."""

    columns: tuple[str, ...]
    rows: Sequence[tuple[object, ...]]
    left_out: int = 0


@dataclass(frozen=True)
class LayerStudies:
    """What the studies found in one layer (None: that study has no row for it)."""

    layer: str
    anchor: str
    sweep: Plot | None = None
    atom_shares: Plot | None = None
    curves: list[tuple[Plot, str]] = field(default_factory=list)
    curve_units: int = 0
    changes: Table | None = None
    changed: int = 0
    units: int = 0
    ranges: Plot | None = None
    ablation: list[Plot] = field(default_factory=list)
    ablation_table: Table | None = None
    groups: int = 0
    blackout: Table | None = None
    scatters: list[tuple[Plot, str]] = field(default_factory=list)
    heuristics: Table | None = None


def _by_layer(rows: Sequence[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        out[row.layer].append(row)
    return out


def sweep_shares(rows: Sequence[ThresholdSweepRow], field: str = "category_shares"
                 ) -> tuple[list[tuple[float, str]], dict[str, list[float]]]:
    """(quantile, tail) in quantile order and, per category, its share at each quantile
    (0 where absent), from a layer's rows with ``field`` (``category_shares``, or
    ``formula_category_shares``: the formulas' atoms)."""
    layer_rows = sorted((r for r in rows if r.unit is None), key=lambda r: r.quantile)
    got = [getattr(r, field) or {} for r in layer_rows]
    cats = sorted({c for g in got for c in g}, key=category_rank)
    shares = {c: [g.get(c, 0.0) for g in got] for c in cats}
    return [(r.quantile, r.tail) for r in layer_rows], shares


def unit_curves(rows: Sequence[ThresholdSweepRow], limit: int = MAX_CURVES
                ) -> tuple[list[tuple[Plot, str]], int]:
    """Per-unit IoU-vs-quantile plots (a line per curve concept) of the ``limit`` units with
    the highest IoU on any curve, by descending IoU then unit; and how many units have a
    curve. Rows written before curves were kept give none."""
    per_unit: dict[int, list[ThresholdSweepRow]] = defaultdict(list)
    for r in rows:
        if r.unit is not None and r.curve:
            per_unit[r.unit].append(r)
    peak = {u: max(p.iou for r in rs for p in r.curve or []) for u, rs in per_unit.items()}
    chosen = sorted(per_unit, key=lambda u: (-peak[u], u))[:limit]
    plots = []
    for u in chosen:
        ordered = sorted(per_unit[u], key=lambda r: r.quantile)
        names = [(p.number, p.name) for p in ordered[0].curve or []]
        ious = {(r.quantile, p.number): p.iou for r in ordered for p in r.curve or []}
        plots.append((sp.iou_curves(u, [(r.quantile, r.tail) for r in ordered],
                                    [(fix(name), [ious.get((r.quantile, n), 0.0)
                                                  for r in ordered]) for n, name in names]),
                      f"unit {u}: highest IoU {sp.fmt(peak[u], 3)}"))
    return plots, len(per_unit)


def label_changes(rows: Sequence[ThresholdSweepRow]) -> tuple[Table, int, int]:
    """The units whose label differs between quantiles: (table, changed units, units).

    A row per changed unit (at most ``MAX_CHANGES``): its label and IoU at each quantile
    (and its formula for compositional jobs).
    """
    quantiles = sorted({r.quantile for r in rows if r.unit is not None})
    per_unit: dict[int, dict[float, ThresholdSweepRow]] = defaultdict(dict)
    for r in rows:
        if r.unit is not None:
            per_unit[r.unit][r.quantile] = r
    changed = [u for u in sorted(per_unit)
               if len({_label(per_unit[u].get(q)) for q in quantiles}) > 1]
    table_rows = [(u, *(_label_cell(per_unit[u].get(q)) for q in quantiles))
                  for u in changed[:MAX_CHANGES]]
    columns = ("unit", *(f"q = {q:g}" for q in quantiles))
    return (Table(columns, table_rows, max(0, len(changed) - MAX_CHANGES)), len(changed),
            len(per_unit))


def _label(row: ThresholdSweepRow | None) -> str | None:
    return row.label.name if row is not None and row.label is not None else None


def _label_cell(row: ThresholdSweepRow | None) -> str:
    """'label (IoU)', then '; formula (IoU)' for compositional jobs; '-' without a label."""
    if row is None or row.label is None:
        return "-"
    text = f"{fix(row.label.name)} ({row.label.iou:.3f})"
    if row.formula is not None and row.formula_iou is not None:
        text += f"; {row.formula} ({row.formula_iou:.3f})"
    return text


def range_flips(rows: Sequence[RangesImportanceRow]) -> list[sp.RangeFlips]:
    """Per range index (ascending): the all-units flip fraction and the per-unit ones."""
    whole = {r.range_index: r.flip_fraction for r in rows if r.unit is None}
    units: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r.unit is not None and r.flip_fraction is not None:
            units[r.range_index].append(r.flip_fraction)
    return [sp.RangeFlips(k, whole.get(k), tuple(units[k]))
            for k in sorted(set(whole) | set(units))]


def _group_name(row: UnitAblationRow) -> str:
    units = ", ".join(map(str, row.units[:6])) + (" …" if len(row.units) > 6 else "")
    name = fix(row.label.name) if row.label else "no label"
    return f"{name} [{units}]" if row.kind == "label" else f"unit {units}: {name}"


def ablation_plots(rows: Sequence[UnitAblationRow]) -> list[Plot]:
    """Probability drop and flip fraction of each label group (the first ``MAX_GROUPS`` in
    the file's order), with vs without its concept."""
    groups = [r for r in rows if r.kind == "label" and r.with_concept and r.without_concept]
    groups = groups[:MAX_GROUPS]
    drop = [(_group_name(r), r.with_concept.probability_drop, r.without_concept.probability_drop)
            for r in groups if r.with_concept and r.without_concept]
    flips = [(_group_name(r), r.with_concept.flip_fraction, r.without_concept.flip_fraction)
             for r in groups if r.with_concept and r.without_concept]
    return [sp.paired_bars(drop, "Drop in the predicted class's probability when a label's "
                                 "units are zeroed", "probability drop"),
            sp.paired_bars(flips, "Prediction flips when a label's units are zeroed",
                           "flip fraction")]


def ablation_table(rows: Sequence[UnitAblationRow]) -> Table:
    """Every ablation row: overall, with and without the concept (flip fraction and
    probability drop, images in parentheses)."""
    columns = ("units zeroed", "label", "overall flips", "overall drop", "with: flips",
               "with: drop", "without: flips", "without: drop")
    out = []
    for r in rows:
        cells: list[object] = [_group_name(r), r.label.category if r.label else "-"]
        for effect in (r.overall, r.with_concept, r.without_concept):
            cells += ([f"{sp.fmt(effect.flip_fraction)} ({effect.images})",
                       sp.fmt(effect.probability_drop)] if effect else ["-", "-"])
        out.append(tuple(cells))
    return Table(columns, out)


def blackout_points(rows: Sequence[ConceptBlackoutRow]
                    ) -> dict[int, list[tuple[int, float, float]]]:
    """Per concept number, (unit, IoU, delta) of its unit rows with a finite delta."""
    out: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    for r in rows:
        if r.unit is not None and r.delta is not None and r.iou is not None:
            out[r.concept.number].append((r.unit, r.iou, r.delta))
    return out


def ranked_concepts(concept_rows: Sequence[ConceptBlackoutRow]) -> list[ConceptBlackoutRow]:
    """Concept rows, most images first, then by name (the table's order)."""
    return sorted(concept_rows, key=lambda r: (-r.images, r.concept.name))


def plotted_concepts(ranked: Sequence[ConceptBlackoutRow]) -> list[ConceptBlackoutRow]:
    """The first ``BLACKOUT_PLOTS`` ranked concepts with a unit of finite delta: those
    that get a scatter."""
    return [r for r in ranked if r.units][:BLACKOUT_PLOTS]


def blackout_rows(results: JobResults) -> list[ConceptBlackoutRow]:
    """The concept rows of ``studies/concept_blackout.jsonl`` and the unit rows of the
    concepts that get a scatter, in two passes over the file's lines, so that the units x
    concepts unit rows are never all validated or held at once (the others are only parsed
    as JSON)."""
    path = results.job.study("concept_blackout")
    if not path.exists():
        return []
    lines = [line for line in storage.read_text(path).splitlines() if line.strip()]
    concepts = [ConceptBlackoutRow.model_validate(d) for d in map(json.loads, lines)
                if not isinstance(d, dict) or d.get("unit") is None]
    shown = {(r.layer, r.concept.number) for layer_rows in _by_layer(concepts).values()
             for r in plotted_concepts(ranked_concepts(layer_rows))}
    units = [ConceptBlackoutRow.model_validate(d) for d in map(json.loads, lines)
             if d.get("unit") is not None and _concept_key(d) in shown]
    return concepts + units


def _concept_key(row: dict[str, Any]) -> tuple[Any, Any]:
    """(layer, concept number) of a parsed row ((layer, None) without a concept)."""
    concept = row.get("concept")
    return row.get("layer"), concept.get("number") if isinstance(concept, dict) else None


def blackout_view(rows: Sequence[ConceptBlackoutRow]
                  ) -> tuple[Table, list[tuple[Plot, str]]]:
    """The table of every concept's Pearson r (most images first) and the scatters of the
    first ``BLACKOUT_PLOTS`` concepts with a point, each with its caption (``rows``: the
    layer's concept rows and at least the unit rows of those concepts)."""
    concepts = ranked_concepts([r for r in rows if r.unit is None])
    points = blackout_points(rows)
    table = Table(("concept", "category", "images", "units", "Pearson r", "p"),
                  [(fix(r.concept.name), r.concept.category, r.images, r.units,
                    sp.fmt(r.pearson_r), sp.fmt(r.pearson_p)) for r in concepts])
    shown = [r for r in plotted_concepts(concepts) if points.get(r.concept.number)]
    scatters = [(sp.blackout_scatter(fix(r.concept.name), points[r.concept.number],
                                     r.pearson_r),
                 f"{fix(r.concept.name)} ({r.concept.category}, {r.images} images): "
                 f"Pearson r = {sp.fmt(r.pearson_r, 3)} over {len(points[r.concept.number])} "
                 "units, one dot each.") for r in shown]
    return table, scatters


def heuristics_table(rows: Sequence[HeuristicsRow]) -> Table:
    """The layer rows of the heuristics study: a row per heuristic, in the study's order."""
    return Table(("heuristic", "searches", "mean visited", "mean seconds", "total seconds",
                  "best formula as unpruned"),
                 [(r.heuristic, r.ranges, f"{r.visited:.1f}", f"{r.seconds:.4f}",
                   f"{r.total_seconds or 0.0:.3f}",
                   "-" if r.same_best is None else f"{r.same_best} of {r.ranges}")
                  for r in rows if r.unit is None])


def layer_studies(layer: str, anchor: str, rows: dict[str, list[Any]]) -> LayerStudies:
    """One layer's section from its rows per study (``rows[name]``, maybe empty)."""
    parts: dict[str, Any] = {}
    if rows["threshold_sweep"]:
        sweep = rows["threshold_sweep"]
        parts["sweep"] = sp.share_lines(*sweep_shares(sweep))
        if any(r.formula_category_shares is not None for r in sweep):
            parts["atom_shares"] = sp.share_lines(
                *sweep_shares(sweep, "formula_category_shares"), "formula atoms")
        parts["curves"], parts["curve_units"] = unit_curves(sweep)
        parts["changes"], parts["changed"], parts["units"] = label_changes(
            rows["threshold_sweep"])
    if rows["ranges_importance"]:
        parts["ranges"] = sp.flip_bars(range_flips(rows["ranges_importance"]))
    if rows["unit_ablation"]:
        parts["ablation"] = ablation_plots(rows["unit_ablation"])
        parts["groups"] = sum(1 for r in rows["unit_ablation"] if r.kind == "label")
        parts["ablation_table"] = ablation_table(rows["unit_ablation"])
    if rows["concept_blackout"]:
        parts["blackout"], parts["scatters"] = blackout_view(rows["concept_blackout"])
    if rows.get("heuristics"):  # a mapping without it: no such study
        parts["heuristics"] = heuristics_table(rows["heuristics"])
    return LayerStudies(layer, anchor, **parts)


def compare_view(layer: LayerComparison) -> dict[str, Any]:
    """One layer of ``compare.json``: the shares plot, the default formulas and operands."""
    ranges = [(r.range_index, r.unspecialized_share, r.weakly_specialized_share)
              for r in layer.ranges]
    return {"layer": layer.layer, "units": layer.units, "top_k": layer.top_k,
            "plot": sp.specialization_bars(ranges),
            "ranges": [(r.range_index, r.unspecialized, sp.fmt(r.unspecialized_share),
                        r.weakly_specialized, sp.fmt(r.weakly_specialized_share))
                       for r in layer.ranges],
            "defaults": [(d.text, d.count) for d in layer.default_formulas],
            "default_left": layer.default_left}


def _readable(what: str, read: Callable[[], T], problems: list[str]) -> T | None:
    """``read()``, or None with a one-line problem noted (and logged) when the file does not
    validate or cannot be read: one bad study file must not stop the report."""
    try:
        return read()
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        lines = str(exc).splitlines() or [type(exc).__name__]
        first = lines[0] + (f" (first: {lines[1].strip()})" if len(lines) > 1 else "")
        problems.append(f"{what}: {first}")
        log.warning("report: cannot read %s (%s); the studies page leaves it out", what, first)
        return None


def sweep_zeros(results: JobResults) -> str:
    """The threshold sweep's zeros convention as a sentence for its caption."""
    sweep = results.spec.studies.threshold_sweep
    if sweep is not None and sweep.zeros == "drop":
        return ("Exact zeros of non-negative units are left out of the quantiles (zeros: drop, "
                "CCE's compare_thresholds), so a point differs from a job at that quantile "
                "when zeros reach into the tail.")
    return ("Exact zeros count in the quantiles (zeros: keep), as in the job's own thresholds: "
            "the point at q is what a job with quantile q labels.")


def studies_context(results: JobResults) -> dict[str, Any]:
    """Variables of ``studies.html`` (layer sections have ids ``layer-<i>``, i the layer's
    position in the spec; ``problems``: the study files that could not be read)."""
    problems: list[str] = []
    readers = {name: partial(study_rows, results, name) for name in STUDY_ROWS}
    readers["concept_blackout"] = partial(blackout_rows, results)
    per_study = {name: _by_layer(_readable(f"studies/{name}.jsonl", read, problems) or [])
                 for name, read in readers.items()}
    layers = []
    for i, layer in enumerate(results.layers):
        rows = {name: per_study[name].get(layer, []) for name in STUDY_ROWS}
        if any(rows.values()):
            layers.append(layer_studies(layer, f"layer-{i}", rows))
    spec = results.spec.studies
    configured = [(name, getattr(spec, name).model_dump_json())
                  for name in STUDY_ROWS if getattr(spec, name) is not None]
    ran = [name for name in STUDY_ROWS if results.job.study(name).exists()]
    compare = _readable("studies/compare.json", lambda: read_compare(results), problems)
    return {"layers": layers, "configured": configured, "ran": ran, "problems": problems,
            "threshold": results.iou_threshold, "compare": compare,
            "zeros": sweep_zeros(results),
            "compare_layers": [compare_view(c) for c in compare.layers] if compare else []}


def write_studies_page(site: Site, results: JobResults) -> None:
    """Write ``studies.html``."""
    site.page("studies.html", "studies.html", **studies_context(results))


STUDIES_PAGE = ReportPage(href="studies.html", title="studies", line="main",
                          present=has_studies, write=write_studies_page)
"""The studies' page (shared by the four study stages; when a study file or compare.json
exists)."""
