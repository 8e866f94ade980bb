"""The whole site: offline rules, links, counts against the records, empty and partial jobs,
byte-identical rebuilds, the classes page, the NetDissect-Lite style."""

from __future__ import annotations

import json
import re
import shutil
from html import escape as html_escape
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fixtures.planted import HEAD_WEIGHTS
from fixtures.report_job import with_top_images
from fixtures.s3 import LocalS3

from ray_dissect.pipeline.table import build_report
from ray_dissect.report.build import ReportOptions, ReportResult
from ray_dissect.report.views import fix, leaf_names, search_terms
from ray_dissect.results import JobResults

LAYER = "body.out"
FORBIDDEN = [re.compile(p, re.I) for p in (r"https?:", r"""(src|href)\s*=\s*["']?//""",
                                          r"\bfetch\s*\(", r"XMLHttpRequest",
                                          r"""type\s*=\s*["']?module""", r"@font-face",
                                          r"@import", r"url\(\s*['\"]?(https?:)?//")]


class _Page(HTMLParser):
    """Links, ids, cards and images of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: list[str] = []
        self.cards: list[dict[str, str]] = []
        self.images: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.links += [a[k] for k in ("href", "src") if k in a]
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "article" and "card" in a.get("class", ""):
            self.cards.append(a)
        if tag == "img":
            self.images.append(a)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _local(target: str) -> str:
    from urllib.parse import unquote

    return unquote(target.split("#")[0])


@pytest.mark.parametrize("site", ["clustered_site", "visual_site"])
def test_offline_rules_and_local_links(site: str, request: pytest.FixtureRequest) -> None:
    """No external URL, fetch, XHR, module script or web font anywhere; every local link
    exists; ids are unique per page; images carry width, height and lazy loading (also with
    the visualisation stages' pages)."""
    root = Path(request.getfixturevalue(site).out)
    for path in root.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            for pattern in FORBIDDEN:
                assert not pattern.search(text), (path, pattern.pattern)
    for html in root.rglob("*.html"):
        page = _parse(html)
        assert len(page.ids) == len(set(page.ids)), html
        for link in page.links:
            if link.startswith(("data:", "#")):
                continue
            assert (html.parent / _local(link)).exists(), (html, link)
        for img in page.images:
            assert img.get("loading") == "lazy" and int(img["width"]) > 0 < int(img["height"])


def test_badges_and_greying_follow_the_best_formula(clustered: JobResults,
                                                   clustered_site: ReportResult) -> None:
    """A clustered unit is badged interpretable (not greyed) when its best range formula
    reaches the IoU threshold, whatever its single-concept label scores; the grid data's
    ``j`` is the results' best_iou."""
    root = Path(clustered_site.out)
    html = (root / "layers" / f"{LAYER}.html").read_text()
    cards = re.findall(r'<article class="(card[^"]*)"[^>]*data-unit="(\d+)".*?</h3>', html, re.S)
    assert len(cards) == len(clustered.records(LAYER))
    df = clustered.to_pandas(LAYER).groupby("unit").best_iou.first()
    data = json.loads(re.search(r"add\([^,]+,(.*)\);", (root / "data" / f"{LAYER}.js")
                                .read_text(), re.S).group(1))
    flips = 0
    for cls, unit in cards:
        rec = clustered.records(LAYER)[int(unit)]
        best = max(e.iou for e in rec.explanations if e.text is not None)
        assert ("muted" in cls) == (best < 0.04), unit
        flips += rec.interpretable != (best >= 0.04)
        assert data["units"][int(unit)]["j"] == pytest.approx(df[int(unit)], abs=1e-6)
    assert flips > 0  # some unit's label and formula disagree: the test tells them apart


def test_layer_header_and_cards_equal_the_records(clustered: JobResults,
                                                  clustered_site: ReportResult) -> None:
    """The header's k/U/m are the records' counts, above the label plots; one card per unit
    with its label and IoU; the data script lists every unit with its search terms."""
    root = Path(clustered_site.out)
    records = clustered.records(LAYER)
    good = [r for r in records if r.interpretable and r.label]
    text = (root / "layers" / f"{LAYER}.html").read_text()
    k, m = len(good), len({(r.label.name, r.label.category) for r in good if r.label})
    assert f"{k}/{len(records)} units covering {m} concepts with IoU \u2265 0.04" in text
    assert 'aria-label="plots"' in text
    assert clustered.summary is not None and clustered.summary.layers[0].interpretable == k
    cards = _parse(root / "layers" / f"{LAYER}.html").cards
    assert [int(c["data-unit"]) for c in cards] == [r.unit for r in records]
    for c, r in zip(cards, records, strict=True):
        assert c["data-layer"] == LAYER
        assert c["data-label"] == (fix(r.label.name) if r.label else "")
        assert float(c["data-iou"]) == pytest.approx(r.label.iou if r.label else 0, abs=1e-6)
    script = (root / "data" / f"{LAYER}.js").read_text()
    data = json.loads(script[script.index(", ") + 2: script.rindex(");")])
    assert [u["q"] for u in data["units"]] == [search_terms(r) for r in records]


def test_unit_pages_show_every_range(clustered: JobResults, clustered_site: ReportResult
                                     ) -> None:
    """A unit page has every range's bounds, formula and beam, its tiles, its raw record and
    its histogram's data (a header line, then the zeros and each bin, counting every value)."""
    rec = clustered.records(LAYER)[8]
    page = (Path(clustered_site.out) / "units" / LAYER / "8.html").read_text()
    for e in rec.explanations:
        assert f'id="r{e.range_index}"' in page and str(e.text) in page
        assert f"{e.visited} exact IoUs" in page
    assert page.count('class="strip"') == 1 + 2 * len(rec.explanations)
    raw = re.search(r'<pre class="raw">(.*?)</pre>', page, re.S).group(1)
    assert json.loads(unescape(raw)) == rec.model_dump(mode="json")
    assert 'id="prev"' in page and 'id="next"' in page
    bins = re.search(r'<pre class="rows">(.*?)</pre>', page, re.S).group(1).split("\n")
    counts = [int(line.split(" ")[2]) for line in bins[1:]]  # the zeros, then 32 bins
    assert bins[0] == "from to values" and len(counts) == 33
    assert sum(counts) == clustered.activations(LAYER)[:, 8].size  # every value, once


def test_concepts_page_lists_who_detects_what(clustered: JobResults,
                                              clustered_site: ReportResult) -> None:
    """Every (concept, unit) at IoU >= t, as label or formula leaf, has a row."""
    text = (Path(clustered_site.out) / "concepts.html").read_text()
    rows = re.findall(r'<tr data-c="([^"]*)">', text)
    want = []
    for r in clustered.records(LAYER):
        if r.label and r.label.iou >= 0.04:
            want.append(fix(r.label.name).lower())
        for e in r.explanations:
            if e.text and e.iou >= 0.04:
                want += [fix(n).lower() for n in dict.fromkeys(leaf_names(e.formula))]
    assert sorted(rows) == sorted(want)


def test_classes_page_ranks_units_by_head_weight(clustered_site: ReportResult) -> None:
    """Per class the contributing units are the largest head weights, in order."""
    text = (Path(clustered_site.out) / "classes.html").read_text()
    w = np.array(HEAD_WEIGHTS)
    for c in range(w.shape[0]):
        section = text[text.index(f'id="class-{c}"'):]
        section = section[: section.index("<h3>inhibiting")]
        shown = [int(u) for u in re.findall(r'<tr><td><a href="[^"]+">(\d+)</a>', section)]
        order = sorted(range(w.shape[1]), key=lambda u: (-w[c, u], u))[:10]
        assert shown == order


def test_size_estimate_is_near_the_written_report(clustered_site: ReportResult) -> None:
    """The size logged before the build (and kept on about.html) is within a factor of two of
    the unit pages, tiles, sprites, shared images and data the report wrote (here 0.46 against
    0.77 MB; the estimate of three baked strips per row it replaces said 3.0 MB)."""
    root = Path(clustered_site.out)
    written = sum(p.stat().st_size for d in ("units", "img", "data")
                  for p in (root / d).rglob("*") if p.is_file())
    assert written / 2 <= clustered_site.estimate <= written * 2, (clustered_site.estimate,
                                                                   written)


def test_empty_layer_renders_every_page(empty_job: Path, tmp_path: Path) -> None:
    """A layer with no interpretable unit gets its empty states, not a crash."""
    result = build_report(with_top_images(empty_job), tmp_path / "site")
    root = Path(result.out)
    layer = (root / "layers" / "pool.html").read_text()
    assert "0/3 units covering 0 concepts with IoU \u2265 1.00" in layer
    assert "No unit reaches IoU 1: no concept to plot." in layer
    assert "No unit detects any concept" in (root / "concepts.html").read_text()
    assert "names no classifier" in (root / "classes.html").read_text()
    assert len(_parse(root / "layers" / "pool.html").cards) == 3
    for u in range(3):
        assert (root / "units" / "pool" / f"{u}.html").exists()


def test_partial_job_names_missing_layers(clustered_job: Path, tmp_path: Path) -> None:
    """Without records and summary yet, the report says which layers are missing."""
    job = tmp_path / "job"
    shutil.copytree(clustered_job, job, ignore=shutil.ignore_patterns("report"))
    (job / "records" / f"{LAYER}.jsonl").unlink()
    (job / "summary.json").unlink()
    result = build_report(JobResults(job), tmp_path / "site")
    index = (Path(result.out) / "index.html").read_text()
    assert f"Partial job: no records yet for {LAYER}" in index
    assert "This layer has no unit records yet." in (
        Path(result.out) / "layers" / f"{LAYER}.html").read_text()


def test_two_builds_are_byte_identical(clustered: JobResults, clustered_site: ReportResult,
                                       tmp_path: Path) -> None:
    """Building the same job again, elsewhere, writes the same bytes in every file."""
    other = build_report(clustered, tmp_path / "again")

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                if p.is_file()}

    assert tree(Path(other.out)) == tree(Path(clustered_site.out))


def test_ndl_style_strips(clustered: JobResults, tmp_path: Path) -> None:
    """--style ndl writes NetDissect-Lite's 2267 x 224 strip of 10 tiles."""
    result = build_report(clustered, tmp_path / "ndl", ReportOptions(style="ndl"))
    from PIL import Image

    strip = Image.open(Path(result.out) / "units" / LAYER / "0_top.jpg")
    assert strip.size == (2267, 224)
    assert not (Path(result.out) / "units" / LAYER / "0_top_raw.jpg").exists()


def test_report_of_an_object_store_job(local_s3: LocalS3, clustered_job: Path,
                                       clustered_site: ReportResult) -> None:
    """A job directory in a bucket gets its report written into the bucket, the same bytes
    as the local build."""
    uri = local_s3.upload(clustered_job, local_s3.bucket("report") + "/job")
    result = build_report(with_top_images(uri))
    assert str(result.index) == f"{uri}/report/index.html"
    local = Path(clustered_site.out)
    for rel in ("index.html", f"layers/{LAYER}.html", f"units/{LAYER}/8.html",
                f"img/{LAYER}/8.webp", f"data/{LAYER}.js", "about.html"):
        assert local_s3.fs.cat_file(f"{uri}/report/{rel}") == (local / rel).read_bytes(), rel


def test_records_without_activations(clustered_job: Path, tmp_path: Path) -> None:
    """A job whose activations were removed still gets its pages, without tiles."""
    job = tmp_path / "job"
    shutil.copytree(clustered_job, job, ignore=shutil.ignore_patterns("report",
                                                                      "activations.zarr"))
    result = build_report(JobResults(job), tmp_path / "s")
    layer = (Path(result.out) / "layers" / f"{LAYER}.html").read_text()
    assert len(_parse(Path(result.out) / "layers" / f"{LAYER}.html").cards) == 12
    assert "Feature map unknown" in layer and not [
        p for p in Path(result.out).rglob("*") if p.suffix in (".jpg", ".webp")]


class _Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        self.totals[stage], self.done[stage] = total, 0

    def advance(self, stage: str, n: int = 1) -> None:
        self.done[stage] += n


def test_progress_and_an_honest_page_count(clustered: JobResults, tmp_path: Path) -> None:
    """The report tells its progress one step per render block plus one for the site's
    pages, and its page count is every HTML page written, unit pages included."""
    seen = _Recorder()
    result = build_report(clustered, tmp_path / "r", ReportOptions(block_units=5),
                          progress=seen)
    blocks = -(-len(clustered.records(LAYER)) // 5)
    assert result.blocks == blocks and seen.totals == {"report": blocks + 1}
    assert seen.done == seen.totals
    assert result.pages == len(list((tmp_path / "r").rglob("*.html")))
    assert result.pages > len(clustered.records(LAYER))


def test_a_thousand_class_head_gets_imagenet_names(clustered: JobResults, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A head with 1,000 outputs and no class folders is named by torchvision's ImageNet
    list (no download); a head of another size keeps plain numbers."""
    from torchvision.models import ResNet18_Weights

    from ray_dissect.report import build
    from ray_dissect.report.visual_pages import names_for

    imagenet = ResNet18_Weights.DEFAULT.meta["categories"]
    assert names_for(clustered, 1000) == tuple(imagenet) and names_for(clustered, 3) == ()
    weights = np.random.default_rng(0).normal(size=(1000, len(clustered.records(LAYER))))
    monkeypatch.setattr(build, "head_weights", lambda _results: (weights, ""))
    site = Path(build_report(clustered, tmp_path / "r").out)
    text = (site / "classes.html").read_text()
    assert f"<h2>class 285 ({imagenet[285]})</h2>" in text and "(tench)" in text
    unit = clustered.records(LAYER)[0].unit  # its page names the classes it feeds most
    page = (site / "units" / LAYER / f"{unit}.html").read_text()
    top = np.lexsort((np.arange(1000), -weights[:, unit]))[:5]
    shown = re.findall(r'#class-(\d+)">class \d+ \(([^)]*)\)</a>', page)
    assert shown == [(str(c), html_escape(imagenet[c], quote=True)) for c in top]
