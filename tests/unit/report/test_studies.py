"""The studies page: its numbers equal those computed here from the study rows and the
records (category shares, label changes, flip fractions, ablation effects, Pearson r by numpy,
compare shares); a job without studies has no page and no link; the page is offline."""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter, defaultdict
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from fixtures.study_job import LAYER, QUANTILES

from ray_dissect.pipeline.table import build_report
from ray_dissect.records.io import read_unit_records
from ray_dissect.report.build import ReportResult
from ray_dissect.report.views import fix
from ray_dissect.results import JobResults

THRESHOLD = 0.04  # the studies job's iou_threshold


class _Tables(HTMLParser):
    """Every table of an HTML fragment: (class attribute, body rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append((dict(attrs).get("class") or "", []))
        elif tag == "tbody":
            self._body = True
        elif tag == "tr" and self._body:
            self.tables[-1][1].append([])
        elif tag == "td" and self._body:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tbody":
            self._body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(fragment: str) -> list[tuple[str, list[list[str]]]]:
    parser = _Tables()
    parser.feed(fragment)
    return parser.tables


def _section(site: ReportResult, study: str) -> str:
    """The HTML of one study's section of the studies page."""
    html = (Path(site.out) / "studies.html").read_text()
    found = re.search(rf'<section class="study" data-study="{study}">(.*?)</section>', html,
                      re.S)
    assert found, study
    return found.group(1)


def _rows(job: Path, study: str) -> list[dict]:
    return [json.loads(line) for line in
            (job / "studies" / f"{study}.jsonl").read_text().splitlines() if line]


def _num(cell: str) -> float | None:
    return None if cell == "-" else float(cell.split(" ")[0])


def test_category_shares_and_label_changes(studies_dir: Path, studies_site: ReportResult
                                           ) -> None:
    """Per quantile, each category's share among the interpretable unit labels, and the
    units whose label changes (with label and formula per quantile), equal those counted
    here from the unit rows."""
    units = [r for r in _rows(studies_dir, "threshold_sweep") if r["unit"] is not None]
    want: dict[float, Counter[str]] = defaultdict(Counter)
    for r in units:
        if r["label"] and r["label"]["iou"] >= THRESHOLD:
            want[r["quantile"]][r["label"]["category"]] += 1
    section = _section(studies_site, "threshold_sweep")
    tables = _tables(section)  # the shares plot's data first, the label changes last
    (_, plotted), _changes = tables[0], tables[-1]
    header = re.search(r"<thead><tr>(.*?)</tr>", section, re.S).group(1)
    cats = re.findall(r"<th scope=\"col\">(.*?)</th>", header)[2:]
    assert [float(row[0]) for row in plotted] == QUANTILES
    assert set(cats) == {c for counts in want.values() for c in counts} and len(cats) >= 2
    for row in plotted:
        counts = want[float(row[0])]
        total = sum(counts.values())
        for cat, cell in zip(cats, row[2:], strict=True):
            assert float(cell) == round(counts[cat] / total if total else 0.0, 4), (row, cat)
    labels: dict[int, set[str | None]] = defaultdict(set)
    for r in units:
        labels[r["unit"]].add(r["label"]["name"] if r["label"] else None)
    changed = sorted(u for u, names in labels.items() if len(names) > 1)
    shown = re.search(r'data-changed="(\d+)" data-units="(\d+)"', section).groups()
    assert shown == (str(len(changed)), str(len(labels)))
    assert [int(row[0]) for row in _changes[1]] == changed
    by_unit = {(r["unit"], r["quantile"]): r for r in units}
    for row in _changes[1]:
        for q, cell in zip(QUANTILES, row[1:], strict=True):
            r = by_unit[(int(row[0]), q)]
            formula = f"; {r['formula']} ({r['formula_iou']:.3f})" if r["formula"] else ""
            label = r["label"] and f"{fix(r['label']['name'])} ({r['label']['iou']:.3f})"
            assert cell == (label + formula if label else "-")


def test_flip_fraction_per_range(studies_dir: Path, studies_site: ReportResult) -> None:
    """Per range index, the all-units flip fraction and the per-unit min, median and max
    equal flips / images of the rows."""
    rows = _rows(studies_dir, "ranges_importance")
    (_, plotted), = _tables(_section(studies_site, "ranges_importance"))
    assert [int(r[0]) for r in plotted] == sorted({r["range_index"] for r in rows})
    for row in plotted:
        k = int(row[0])
        (whole,) = [r for r in rows if r["range_index"] == k and r["unit"] is None]
        per_unit = [r["flips"] / r["images"] for r in rows
                    if r["range_index"] == k and r["unit"] is not None]
        assert float(row[1]) == round(whole["flips"] / whole["images"], 4)
        assert int(row[2]) == len(per_unit) == 4
        spread = [min(per_unit), float(np.median(per_unit)), max(per_unit)]
        assert [float(c) for c in row[3:]] == [round(v, 4) for v in spread]
    assert any(float(row[1]) > 0 for row in plotted)


def test_unit_ablation_effects(studies_dir: Path, studies_site: ReportResult) -> None:
    """The probability drop and flip fraction with and without the concept per label group,
    and every row's effects, equal the rows' (flip fraction = flips / images)."""
    rows = _rows(studies_dir, "unit_ablation")
    drop, flips, every = _tables(_section(studies_site, "unit_ablation"))
    groups = [r for r in rows if r["kind"] == "label"]
    assert len(drop[1]) == len(flips[1]) == len(groups) >= 1
    for r, d, f in zip(groups, drop[1], flips[1], strict=True):
        assert d[0].startswith(fix(r["label"]["name"])) and f[0] == d[0]
        assert [float(c) for c in d[1:]] == [round(r[k]["probability_drop"], 4)
                                             for k in ("with_concept", "without_concept")]
        assert [float(c) for c in f[1:]] == [round(r[k]["flips"] / r[k]["images"], 4)
                                             for k in ("with_concept", "without_concept")]
    assert len(every[1]) == len(rows) > len(groups)
    for r, cells in zip(rows, every[1], strict=True):
        for i, key in enumerate(("overall", "with_concept", "without_concept")):
            e = r[key]
            assert cells[2 + 2 * i] == f"{e['flips'] / e['images']:.4f} ({e['images']})"
            assert cells[3 + 2 * i] == f"{e['probability_drop']:.4f}"


def test_blackout_pearson_r_is_numpys(studies_dir: Path, studies_site: ReportResult) -> None:
    """Per concept, the printed Pearson r of IoU against delta equals numpy's corrcoef over
    the unit rows with a finite delta ('-' where it is undefined); the scatters' captions
    print it too."""
    rows = _rows(studies_dir, "concept_blackout")
    points: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["unit"] is not None and r["delta"] is not None:
            points[fix(r["concept"]["name"])].append((r["iou"], r["delta"]))
    section = _section(studies_site, "concept_blackout")
    table = next(t for cls, t in _tables(section) if "blackout" in cls)
    assert len(table) == sum(1 for r in rows if r["unit"] is None)
    finite = 0
    for name, _cat, _images, units, r_cell, _p in table:
        iou, delta = (np.array(v, dtype=np.float64) for v in zip(*points[name], strict=True)
                      ) if points[name] else (np.zeros(0), np.zeros(0))
        assert int(units) == len(iou)
        if len(iou) < 2 or np.ptp(iou) == 0 or np.ptp(delta) == 0:
            assert r_cell == "-", name
            continue
        finite += 1
        assert abs(float(r_cell) - np.corrcoef(iou, delta)[0, 1]) < 1e-4, name
    assert finite >= 3
    captions = re.findall(r"<figcaption>(.*?) \(\w+, \d+ images\): Pearson r = (\S+) over",
                          section)
    by_name = {unescape(row[0]): row[4] for row in table}
    assert captions and all(_num(r) == (None if by_name[unescape(n)] == "-" else
                                        round(float(by_name[unescape(n)]), 3))
                            for n, r in captions)


def test_compare_shares(studies_dir: Path, studies_site: ReportResult) -> None:
    """The compare view's counts and shares per range equal compare.json's; unspecialized
    counts and the default formulas equal those counted here from both jobs' records."""
    report = json.loads((studies_dir / "studies" / "compare.json").read_text())
    (layer,) = report["layers"]
    html = (Path(studies_site.out) / "studies.html").read_text()
    part = re.search(rf'<section class="compare-layer" data-layer="{LAYER}">(.*?)</section>',
                     html, re.S).group(1)
    tables = {cls: rows for cls, rows in _tables(part)}
    shares = tables["data shares"]
    assert [[int(r[0]), int(r[1]), float(r[2]), int(r[3]), float(r[4])] for r in shares] == [
        [g["range_index"], g["unspecialized"], round(g["unspecialized_share"], 4),
         g["weakly_specialized"], round(g["weakly_specialized_share"], 4)]
        for g in layer["ranges"]]
    assert sum(g["unspecialized"] for g in layer["ranges"]) > 0
    assert sum(g["weakly_specialized"] for g in layer["ranges"]) > 0
    trained = list(read_unit_records(studies_dir / "records" / f"{LAYER}.jsonl"))
    baseline = list(read_unit_records(Path(report["baseline"]) / "records" / f"{LAYER}.jsonl"))
    texts = Counter(e.text for rec in sorted(baseline, key=lambda r: r.unit)
                    for e in sorted(rec.explanations, key=lambda e: e.range_index) if e.text)
    k = math.ceil(0.2 * len(trained))
    defaults = texts.most_common(k)
    assert [(unescape(t), int(n)) for t, n in tables["data defaults"]] == defaults
    unspecialized = Counter(e.range_index for rec in trained for e in rec.explanations
                            if e.text in dict(defaults))
    assert [int(r[1]) for r in shares] == [unspecialized[int(r[0])] for r in shares]
    assert [float(r[2]) for r in shares] == [round(unspecialized[int(r[0])] / len(trained), 4)
                                             for r in shares]


def test_nav_links_studies_only_when_they_ran(studies_site: ReportResult,
                                              clustered_site: ReportResult) -> None:
    """Every page of the studies job links studies.html; a job without studies has neither
    the page nor a link to it."""
    root = Path(studies_site.out)
    for page in (root / "index.html", root / "about.html", *root.glob("layers/*.html"),
                 *root.glob("units/*/*.html")):
        assert "/studies.html\">studies</a>" in page.read_text(), page
    other = Path(clustered_site.out)
    assert not (other / "studies.html").exists()
    assert all("studies.html" not in p.read_text() for p in other.rglob("*.html"))


def test_studies_page_is_offline(studies_site: ReportResult) -> None:
    """The page has no external URL or script, unique ids, every local link resolving and
    every in-page link to an id on it."""
    path = Path(studies_site.out) / "studies.html"
    html = path.read_text()
    assert not re.search(r"https?:|fetch\s*\(|XMLHttpRequest|type=\"module\"", html)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for link in re.findall(r'(?:href|src)="([^"]+)"', html):
        if link.startswith("#"):
            assert link[1:] in ids, link
        elif not link.startswith("data:"):
            assert (path.parent / unquote(link.split("#")[0])).exists(), link
    assert html.count("<svg") >= 5


def test_unreadable_study_files_are_named_not_fatal(studies_dir: Path, tmp_path: Path) -> None:
    """Study files with a bad row or a line that is not JSON, and a compare.json of another
    shape, are named in a banner; the other studies still show."""
    job = tmp_path / "job"
    shutil.copytree(studies_dir, job)
    with (job / "studies" / "unit_ablation.jsonl").open("a") as f:
        f.write('{"layer": "units.out", "kind": "label"}\n')
    with (job / "studies" / "concept_blackout.jsonl").open("a") as f:
        f.write("not json\n")
    (job / "studies" / "compare.json").write_text('{"layers": 3}')
    site = build_report(JobResults(job), tmp_path / "report")
    html = (Path(site.out) / "studies.html").read_text()
    banner = re.search(r'<p class="banner" role="status">(.*?)</p>', html, re.S).group(1)
    for name in ("unit_ablation.jsonl", "concept_blackout.jsonl", "compare.json"):
        assert f"studies/{name}: " in banner
    assert re.findall(r'data-study="(\w+)"', html) == ["threshold_sweep", "ranges_importance"]
    assert 'id="compare"' not in html


def test_studies_page_is_byte_identical_on_rebuild(studies_dir: Path, studies_site: ReportResult,
                                                   tmp_path: Path) -> None:
    """Building the report again writes the same studies page byte for byte."""
    again = build_report(JobResults(studies_dir), tmp_path / "report")
    assert (Path(again.out) / "studies.html").read_bytes() == \
        (Path(studies_site.out) / "studies.html").read_bytes()


def test_many_label_groups_plot_the_first_forty() -> None:
    """With 50 label groups the plots draw the first 40 in file order and say so; the table
    keeps all 50."""
    from ray_dissect.records.studies import AblationEffect, Concept, UnitAblationRow
    from ray_dissect.report.pages import environment
    from ray_dissect.report.studies import MAX_GROUPS, layer_studies

    effect = AblationEffect(images=4, flips=1, flip_fraction=0.25, probability_drop=0.1)
    rows = [UnitAblationRow(layer="l", kind="label", units=[g],
                            label=Concept(name=f"c{g}", number=g, category="object"),
                            overall=effect, with_concept=effect, without_concept=effect)
            for g in range(50)]
    empty = {name: [] for name in ("threshold_sweep", "ranges_importance", "concept_blackout")}
    section = layer_studies("l", "layer-0", {**empty, "unit_ablation": rows})
    assert MAX_GROUPS == 40 and section.groups == 50
    assert [r[0] for r in section.ablation[0].rows] == [f"c{g} [{g}]" for g in range(40)]
    assert len(section.ablation_table.rows) == 50
    html = environment().get_template("studies.html").render(
        job_name="j", missing=[], footer="", prefix=".", page_kind="page",
        nav={"main": [("studies.html", "studies")], "stages": []},
        layers=[section], configured=[], ran=["unit_ablation"], problems=[],
        threshold=0.04, compare=None, compare_layers=[])
    assert html.count("(the first 40 of 50 groups;") == 2


def test_sweep_caption_states_the_zeros_convention(studies_dir: Path, studies_site: ReportResult,
                                                   tmp_path: Path) -> None:
    """The sweep's caption says whether exact zeros count in its quantiles (keep, the
    default) or are left out (drop, CCE's convention), as the spec chose."""
    from ray_dissect.report.studies import sweep_zeros

    html = (Path(studies_site.out) / "studies.html").read_text()
    assert "zeros: keep" in html and "zeros: drop" not in html
    spec = json.loads((studies_dir / "spec.json").read_text())
    spec["studies"]["threshold_sweep"]["zeros"] = "drop"
    shutil.copytree(studies_dir, tmp_path / "job", ignore=shutil.ignore_patterns("report"))
    (tmp_path / "job" / "spec.json").write_text(json.dumps(spec))
    assert "zeros: drop" in sweep_zeros(JobResults(tmp_path / "job"))
