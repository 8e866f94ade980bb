"""The concepts page's gallery: per concept its k best units, ranked from the records by the
method's rule (label IoU for netdissect, formula IoU for clustered), ties to the earlier layer
and the lower unit, each showing its card's sprite row and linking to its unit page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import cast
from urllib.parse import unquote

import pytest
from fixtures.report_job import run_job, with_top_images

from ray_dissect.pipeline.table import build_report
from ray_dissect.records.schema import UnitRecord
from ray_dissect.report import pages as pg
from ray_dissect.report.build import GALLERY_UNITS, ReportResult
from ray_dissect.report.catalog import concept_gallery
from ray_dissect.report.views import fix, leaf_names
from ray_dissect.results import JobResults

SECTION = re.compile(r'<section class="gallery" data-c="([^"]*)"[^>]*>(.*?)</section>', re.S)
FIGURE = re.compile(r'<figure class="gunit">(.*?)</figure>', re.S)


@pytest.fixture(scope="module")
def netdissect(tmp_path_factory: pytest.TempPathFactory, report_data: Path) -> JobResults:
    """Twelve colour-name units in two layers (the scores before and after the offset)."""
    out = tmp_path_factory.mktemp("gallery") / "nd"
    return with_top_images(run_job(report_data, out, "named_colors_with_head",
                                   ["body.names", "body.out"], kind="netdissect"))


@pytest.fixture(scope="module")
def netdissect_site(tmp_path_factory: pytest.TempPathFactory, netdissect: JobResults
                    ) -> ReportResult:
    return build_report(netdissect, tmp_path_factory.mktemp("gallery") / "report")


def _expected(results: JobResults) -> dict[str, list[tuple[str, int, int | None]]]:
    """Per concept its ranked (layer, unit, range) from the records, independently."""
    method, t = results.spec.method.kind, results.iou_threshold
    scored: dict[str, list[tuple[float, int, int, int | None]]] = {}
    for li, layer in enumerate(results.layers):
        for r in results.records(layer):
            best: dict[str, tuple[float, int | None]] = {}
            if method == "netdissect" and r.label is not None:
                best[r.label.name] = (r.label.iou, None)
            for e in r.explanations if method != "netdissect" else []:
                for name in set(leaf_names(e.formula)) if e.text else set():
                    old = best.get(name)
                    if old is None or (e.iou, -e.range_index) > (old[0], -(old[1] or 0)):
                        best[name] = (e.iou, e.range_index)
            for name, (iou, ri) in best.items():
                if iou >= t:
                    scored.setdefault(fix(name).lower(), []).append((-iou, li, r.unit, ri))
    return {name: [(results.layers[li], u, ri) for _, li, u, ri in sorted(v)[:GALLERY_UNITS]]
            for name, v in scored.items()}


def _shown(site: ReportResult) -> dict[str, list[tuple[str, int, str, str, int]]]:
    """Per gallery section: (layer, unit, href, img src, row offset px) of each figure."""
    text = (Path(site.out) / "concepts.html").read_text()
    out = {}
    for name, body in SECTION.findall(text):
        rows = []
        for fig in FIGURE.findall(body):
            cap = re.search(r'<figcaption>(\S+) unit <a href="([^"]+)">(\d+)</a>', fig)
            img = re.search(r'<img src="([^"]+)"[^>]*margin-top:-(\d+)px', fig)
            assert cap and img, fig
            rows.append((cap.group(1), int(cap.group(3)), cap.group(2), img.group(1),
                         int(img.group(2))))
        out[name] = rows
    return out


@pytest.mark.parametrize(("job", "site"), [("netdissect", "netdissect_site"),
                                           ("clustered", "clustered_site")])
def test_gallery_ranks_units_per_concept_and_links_resolve(
        job: str, site: str, request: pytest.FixtureRequest) -> None:
    """Each concept's gallery is the ranking computed from the records; every link and sprite
    exists; the sprite row shown is the label's top row (netdissect: row 0) or the row of the
    range whose formula holds the concept (the card's sprite has one row per range)."""
    results: JobResults = request.getfixturevalue(job)
    built: ReportResult = request.getfixturevalue(site)
    want, shown = _expected(results), _shown(built)
    assert want, "the fixture must have concepts above the IoU threshold"
    assert sorted(shown) == sorted(want)
    step = 64 + 2
    for name, rows in shown.items():
        assert [(layer, unit) for layer, unit, *_ in rows] == [
            (layer, unit) for layer, unit, _ in want[name]], name
        for (layer, unit, href, src, offset), (_, _, ri) in zip(rows, want[name], strict=True):
            assert (Path(built.out) / unquote(href)).is_file(), href
            assert (Path(built.out) / unquote(src)).is_file(), src
            assert href.endswith(f"/{unit}.html") and src.endswith(f"/{unit}.webp")
            rec = next(r for r in results.records(layer) if r.unit == unit)
            ranges = [e.range_index for e in rec.explanations if e.top_images]
            assert offset == (0 if ri is None else ranges.index(ri)) * step


class _Twin:
    """The netdissect results with layer ``body.names`` holding copies of ``body.out``'s
    records: every concept ties across the two layers."""

    def __init__(self, results: JobResults) -> None:
        self.results, self.layers = results, results.layers
        self.spec, self.iou_threshold = results.spec, results.iou_threshold

    def records(self, layer: str) -> list[UnitRecord]:
        return [r.model_copy(update={"layer": layer})
                for r in self.results.records("body.out")]


def test_gallery_breaks_ties_to_the_earlier_layer_then_the_lower_unit(
        netdissect: JobResults) -> None:
    """With every label tied across two layers, each concept lists the earlier layer's units
    first; within a layer equal IoUs go to the lower unit (the expected ranking from the
    records, as above)."""
    twin = cast(JobResults, _Twin(netdissect))
    cards = {layer: pg.layer_cards(twin, layer, {}) for layer in twin.layers}
    gallery = concept_gallery(twin, cards, {layer: {} for layer in twin.layers}, k=4)
    want = _expected(twin)
    assert gallery
    for name, units in gallery:
        assert [(g.layer, g.unit) for g in units] == [
            (layer, u) for layer, u, _ in want[name.lower()]][:4]
        ious = [g.iou for g in units]
        assert ious == sorted(ious, reverse=True)
        assert all(g.row is None and g.sprite is None for g in units)
    assert any(len({g.layer for g in units}) == 2 for _, units in gallery)
