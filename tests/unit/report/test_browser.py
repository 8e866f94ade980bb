"""The report in a real headless Chromium (Debian's), opened from file:// with the network
blocked: cards, decoded images, sorting, filtering, the URL hash, keys, no errors.

Skipped when no chromium binary is installed, unless RAY_DISSECT_REQUIRE_CHROMIUM is set
(CI: `.ci/run`), where a missing browser fails. Screenshots are kept in
``.scratch/report-screenshots/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fixtures.cdp import CHROMIUM, Browser
from PIL import Image

from ray_dissect.report.build import ReportResult
from ray_dissect.report.views import search_terms
from ray_dissect.results import JobResults

LAYER = "body.out"
SHOTS = Path(__file__).parents[3] / ".scratch" / "report-screenshots"
CARDS = "Array.from(document.querySelectorAll('#grid .card'))"

# Scroll every image into view, wait for it to load (lazy loading), report naturalWidth.
DECODE_ALL = """(async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    img.scrollIntoView();
    if (!img.complete) {
      await new Promise(r => { img.addEventListener('load', r, {once: true});
                               img.addEventListener('error', r, {once: true});
                               setTimeout(r, 3000); });
    }
    out.push([img.getAttribute('src'), img.naturalWidth]);
  }
  window.scrollTo(0, 0);
  return out;
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    if CHROMIUM is None:
        if os.environ.get("RAY_DISSECT_REQUIRE_CHROMIUM"):
            pytest.fail("chromium missing: `make browser` (apt-get install chromium) failed")
        pytest.skip("no chromium binary (`make browser` installs Debian's)")
    with Browser(1280, 1000) as b:
        yield b


def _url(site: ReportResult, rel: str) -> str:
    """The file:// URL of a report page (``#hash`` kept as a fragment)."""
    path, _, fragment = rel.partition("#")
    return (Path(site.out) / path).resolve().as_uri() + (f"#{fragment}" if fragment else "")


def _clean(b: Browser) -> None:
    """Nothing but file: and data: was requested, and nothing went wrong in the page."""
    assert [u for u in b.requests if not u.startswith(("file:", "data:"))] == []
    assert [c for c in b.console if c["type"] in ("error", "assert")] == [] and b.errors == []


def _not_blank(path: Path, size: tuple[int, int] | None = None) -> None:
    """The screenshot has the window's size (when given) and is not one flat colour."""
    img = Image.open(path)
    assert size is None or img.size == size, (path, img.size)
    assert np.asarray(img.convert("L"), dtype=np.float64).std() > 20, path


def test_index_and_layer_page(browser: Browser, clustered: JobResults,
                              clustered_site: ReportResult) -> None:
    """The index links the layer; the layer page shows one card per unit with every image
    decoded, and a non-blank screenshot."""
    browser.goto(_url(clustered_site, "index.html"))
    assert browser.evaluate("document.querySelector('table.data').tBodies[0].rows.length") == 1
    _not_blank(browser.screenshot(SHOTS / "index.png"), (1280, 1000))
    browser.goto(_url(clustered_site, f"layers/{LAYER}.html"))
    units = browser.evaluate(f"{CARDS}.map(c => +c.dataset.unit)")
    assert units == [r.unit for r in clustered.records(LAYER)]
    decoded = browser.evaluate(DECODE_ALL)
    assert decoded and all(width > 0 for _, width in decoded), decoded
    _not_blank(browser.screenshot(SHOTS / "layer.png", full_page=True))
    _clean(browser)


def test_sort_filter_and_hash(browser: Browser, clustered: JobResults,
                              clustered_site: ReportResult) -> None:
    """Sorting by IoU puts the best unit first and writes the hash; a search shows the units
    Python finds; the slider recounts the header; reloading the hash restores the view."""
    records = clustered.records(LAYER)
    browser.goto(_url(clustered_site, f"layers/{LAYER}.html"))
    browser.evaluate("(() => { const s = document.getElementById('sort'); s.value = 'iou';"
                     " s.dispatchEvent(new Event('change')); "
                     "document.getElementById('dir').click(); })()")
    order = browser.evaluate(f"{CARDS}.map(c => +c.dataset.unit)")
    best = max(records, key=lambda r: (r.label.iou if r.label else 0, -r.unit))
    assert order[0] == best.unit and order != sorted(order)
    assert browser.evaluate("location.hash") == "#sort=iou:desc"
    browser.evaluate("(() => { const q = document.getElementById('q'); q.value = 'red';"
                     " q.dispatchEvent(new Event('input')); })()")
    want = [r.unit for r in sorted(records, key=lambda r: (-(r.label.iou if r.label else 0),
                                                           r.unit))
            if any("red" in t for t in search_terms(r))]
    shown = browser.evaluate(f"{CARDS}.map(c => +c.dataset.unit)")
    assert shown == want and 0 < len(want) < len(records)
    browser.evaluate("(() => { const m = document.getElementById('min'); m.value = '0.09';"
                     " m.dispatchEvent(new Event('input')); })()")
    k = sum(1 for r in records if r.label and r.label.iou >= 0.09)
    assert browser.evaluate("+document.getElementById('header').dataset.k") == k
    url = browser.evaluate("location.href")
    browser.goto(_url(clustered_site, "index.html"))
    browser.goto(url)
    assert browser.evaluate(f"{CARDS}.map(c => +c.dataset.unit)") == want
    assert browser.evaluate("document.getElementById('q').value") == "red"
    assert browser.evaluate("document.getElementById('sort').value") == "iou"
    browser.goto(_url(clustered_site, f"layers/{LAYER}.html#q=3,5-6"))
    assert browser.evaluate(f"{CARDS}.map(c => +c.dataset.unit)") == [3, 5, 6]
    _clean(browser)


def test_unit_page(browser: Browser, clustered_site: ReportResult) -> None:
    """A unit page decodes its strips, spells its histogram's data out as a table, switches
    views, and `j` opens the next unit."""
    browser.goto(_url(clustered_site, f"units/{LAYER}/8.html"))
    decoded = browser.evaluate(DECODE_ALL)
    strips = [src for src, _ in decoded if not src.startswith("../../img/src/")]  # overlays
    assert len(strips) == 7 * 2 and all(width > 0 for _, width in decoded), decoded
    assert all(src.endswith(".webp") for src in strips) and len(decoded) > len(strips)
    _not_blank(browser.screenshot(SHOTS / "unit.png", full_page=True))
    bins = browser.evaluate("[...document.querySelectorAll('figure.plot table.data tr')]"
                            ".map(r => [...r.cells].map(c => c.textContent))")
    assert bins[0] == ["from", "to", "values"] and len(bins) == 1 + 1 + 32  # zeros, 32 bins
    assert browser.evaluate("document.querySelectorAll('pre.rows').length") == 0
    shown = ("[...document.querySelectorAll('.strip .ov')].filter("
             "i => getComputedStyle(i).visibility !== 'hidden').map(i => i.dataset.ov)")
    rows = browser.evaluate("document.querySelectorAll('.strip').length")
    assert browser.evaluate(shown) == ["mask"] * rows
    browser.evaluate("document.querySelector('button[data-view=raw]').click()")
    assert browser.evaluate(shown) == []
    browser.evaluate("document.querySelector('button[data-view=concept]').click()")
    assert sorted(browser.evaluate(shown)) == sorted(["mask"] * rows + ["concept"] * rows)
    browser.evaluate("document.querySelector('button[data-view=heat]').click()")
    assert browser.evaluate(shown) == ["heat"] * rows
    assert browser.evaluate("document.querySelector('button[data-view=heat]')"
                            ".getAttribute('aria-pressed')") == "true"
    _not_blank(browser.screenshot(SHOTS / "unit_heat.png", full_page=True))
    mark = len(browser.events)
    browser.page("Input.dispatchKeyEvent", type="keyDown", key="j", text="j")
    browser.page("Input.dispatchKeyEvent", type="keyUp", key="j")
    browser.wait_event("Page.loadEventFired", since=mark)
    assert browser.evaluate("location.pathname").endswith(f"units/{LAYER}/9.html")
    _clean(browser)


def _jet(v: np.ndarray) -> np.ndarray:
    """Jet written out: (...) in [0, 1] -> (..., 3) in [0, 1]."""
    return np.stack([np.clip(1.5 - np.abs(4.0 * v - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)],
                    axis=-1)


# Wait until every heat PNG of the page has loaded (background images load when shown).
HEAT_LOADED = """Promise.all([...document.querySelectorAll('.strip .heat')].map(d =>
  new Promise(r => {
  const img = new Image(); img.onload = img.onerror = r;
  img.src = getComputedStyle(d).backgroundImage.slice(5, -2); })))
  .then(() => new Promise(r => requestAnimationFrame(() => setTimeout(r, 100))))"""


def test_heat_view_draws_jet_of_the_bilinear_map(browser: Browser,
                                                  clustered_site: ReportResult) -> None:
    """The heat view as Chromium draws it: each tile of the top row is the raw tile under
    jet(the row's map upsampled bilinearly by torch, align_corners=False) at alpha 0.6, to
    within the 8-bit rounding of the browser's scaling and filter (jet's slope is 4, so one
    level of the map moves a colour by ~2.4 at alpha 0.6; here mean 0.4, 99th percentile 2; a
    tile showing its neighbour's cell is off by 8 and 150)."""
    import torch
    import torch.nn.functional as F

    site = Path(clustered_site.out)
    browser.goto(_url(clustered_site, f"units/{LAYER}/8.html"))
    browser.evaluate("document.querySelector('button[data-view=heat]').click()")
    assert browser.evaluate("!!document.getElementById('jet')")
    browser.evaluate("document.querySelector('.strip[data-row=top]').scrollIntoView()")
    browser.evaluate(HEAT_LOADED)
    boxes = browser.evaluate("[...document.querySelectorAll('.strip[data-row=top] .heat i')]"
                             ".map(i => { const r = i.getBoundingClientRect();"
                             " return [r.left, r.top, r.width, r.height]; })")
    srcs = browser.evaluate("[...document.querySelectorAll('.strip[data-row=top] img.src')]"
                            ".map(i => i.getAttribute('src'))")
    shot = np.asarray(Image.open(browser.screenshot(SHOTS / "unit_heat_top.png")).convert("RGB"),
                      np.float64)
    cells = np.asarray(Image.open(site / "units" / LAYER / "8_top_heat.png"), np.float64)
    assert len(boxes) == len(srcs) >= 3
    w = cells.shape[1] // len(boxes) - 2  # each map framed by 1 px
    errors = []
    for j, ((left, top, width, height), src) in enumerate(zip(boxes, srcs, strict=True)):
        assert width == height == int(width), boxes  # layout may put the row at y + 0.8
        size, x, y = int(width), round(left), round(top)
        values = cells[1:-1, j * (w + 2) + 1: j * (w + 2) + 1 + w] / 255.0
        up = F.interpolate(torch.from_numpy(values)[None, None], size=(size, size),
                           mode="bilinear", align_corners=False)[0, 0].numpy()
        raw = np.asarray(Image.open(site / "units" / LAYER / src).convert("RGB"), np.float64)
        want = raw * 0.4 + 255.0 * _jet(up) * 0.6
        errors.append(np.abs(shot[y: y + size, x: x + size] - want))
    error = np.stack(errors)
    assert error.mean() <= 2 and np.percentile(error, 99) <= 12, (error.mean(), error.max())
    _clean(browser)


@pytest.mark.parametrize("rel", ["attribution.html", "prism.html", "layers/features.html",
                                 "units/features/0.html"])
def test_visual_pages_load_offline(browser: Browser, visual_site: ReportResult, rel: str
                                   ) -> None:
    """The receptive-field, attribution and PRISM views load from file:// with nothing else
    requested, no console error, and every image decoded."""
    browser.goto(_url(visual_site, rel))
    decoded = browser.evaluate(DECODE_ALL)
    assert decoded and all(width > 0 for _, width in decoded), decoded
    if rel.endswith(("attribution.html", "prism.html")):
        assert browser.evaluate("document.querySelectorAll('nav a[href$=\"prism.html\"]')"
                                ".length") == 1
    _not_blank(browser.screenshot(SHOTS / rel.replace("/", "_").replace(".html", ".png"),
                                  full_page=True))
    _clean(browser)


def test_method_none_unit_page_opens_on_the_heat_view(browser: Browser,
                                                     visual_site: ReportResult) -> None:
    """Without a dissection the unit page shows the heat overlays first (the mask overlay
    masks nothing); the mask button switches them off."""
    browser.goto(_url(visual_site, "units/features/0.html"))
    browser.evaluate(DECODE_ALL)
    shown = ("[...document.querySelectorAll('.strip .ov')].filter("
             "i => getComputedStyle(i).visibility !== 'hidden').map(i => i.dataset.ov)")
    rows = browser.evaluate("document.querySelectorAll('.strip').length")
    assert rows >= 1 and browser.evaluate(shown) == ["heat"] * rows
    _not_blank(browser.screenshot(SHOTS / "unit_none_heat.png", full_page=True))
    browser.evaluate("document.querySelector('button[data-view=mask]').click()")
    assert browser.evaluate(shown) == ["mask"] * rows
    _clean(browser)


def test_vit_attribution_page(browser: Browser, tmp_path: Path) -> None:
    """An attribution job on a ViT token layer (tiny_vit) gets a page whose Grad-CAM and
    feature-map pictures all decode, offline and without errors."""
    from fixtures.photos import PLANTED, photo_folder, photo_job

    from ray_dissect.pipeline.run import run_stages
    from ray_dissect.pipeline.table import build_report
    from ray_dissect.results import open_job
    from ray_dissect.spec import parse_spec

    layer = "encoder.layers.encoder_layer_0"
    spec = photo_job(photo_folder(tmp_path / "photos"), layers=[layer], model={
        "factory": f"{PLANTED}:tiny_vit",
        "preprocess": {"size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}},
        analyses={"attribution": {"methods": ["gradcam", "feature_maps"], "layer": layer}})
    run_stages(parse_spec(spec), tmp_path / "out")
    site = build_report(open_job(tmp_path / "out"))
    browser.goto(_url(site, "attribution.html"))
    decoded = browser.evaluate(DECODE_ALL)
    assert len(decoded) > 6 and all(width > 0 for _, width in decoded), decoded
    _not_blank(browser.screenshot(SHOTS / "vit_attribution.png", full_page=True))
    _clean(browser)


def test_studies_page(browser: Browser, studies_site: ReportResult) -> None:
    """The index's nav opens the studies page offline: its four study sections and the
    compare view show, every plot has a size, and nothing goes wrong."""
    browser.goto(_url(studies_site, "index.html"))
    mark = len(browser.events)
    browser.evaluate("document.querySelector('nav a[href=\"./studies.html\"]').click()")
    browser.wait_event("Page.loadEventFired", since=mark)
    assert browser.evaluate("location.pathname").endswith("/studies.html")
    studies = browser.evaluate("Array.from(document.querySelectorAll('section.study'))"
                               ".map(s => s.dataset.study)")
    assert studies == ["threshold_sweep", "ranges_importance", "unit_ablation",
                       "concept_blackout"]
    assert browser.evaluate("document.querySelectorAll('section.compare-layer').length") == 1
    sizes = browser.evaluate("Array.from(document.querySelectorAll('svg.plot'))"
                             ".map(s => s.getBoundingClientRect().width)")
    assert len(sizes) >= 5 and all(w > 0 for w in sizes), sizes
    _not_blank(browser.screenshot(SHOTS / "studies.png", full_page=True))
    _clean(browser)
