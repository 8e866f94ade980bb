"""The report's receptive-field, attribution and PRISM views on a small real job that ran the
stages, checked against the stored arrays decoded independently here."""

from __future__ import annotations

import html
import itertools
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from fixtures.planted import tiny_classifier
from fixtures.visual_job import CLASSES, METHODS
from PIL import Image

from ray_dissect.pipeline.table import build_report
from ray_dissect.report.build import ReportResult
from ray_dissect.report.render import render_block
from ray_dissect.results import JobResults, open_job
from ray_dissect.storage import arrays

LAYER = "features"


def _job(site: ReportResult) -> Path:
    return Path(str(site.out)).parent


def _read(site: ReportResult, rel: str) -> str:
    return (Path(str(site.out)) / rel).read_text()


def _png(site: ReportResult, rel: str) -> np.ndarray:
    """A PNG's pixels as stored (palette indices for palette images)."""
    return np.asarray(Image.open(Path(str(site.out)) / rel))


def _scaled(values: np.ndarray) -> np.ndarray:
    """rint(255 (x - min) / (max - min)), 0 for a constant map."""
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    return np.rint(255 * (v - v.min()) / span).astype(np.uint8) if span > 0 else \
        np.zeros(v.shape, np.uint8)


def _local_links(page: str) -> list[str]:
    return [html.unescape(u) for u in re.findall(r'(?:href|src)="([^"#]+)', page)
            if not u.startswith("data:")]


@pytest.mark.parametrize("rel", ["index.html", "attribution.html", "prism.html",
                                 f"layers/{LAYER}.html", f"units/{LAYER}/0.html"])
def test_pages_exist_and_every_link_resolves(visual_site: ReportResult, rel: str) -> None:
    """Every page links attribution.html and prism.html from its nav, and every local href
    and src of the page exists."""
    page = _read(visual_site, rel)
    prefix = "../" * rel.count("/") or "./"
    assert f'href="{prefix}attribution.html"' in page and f'href="{prefix}prism.html"' in page
    base = (Path(str(visual_site.out)) / rel).parent
    missing = [u for u in _local_links(page) if not (base / u).exists()]
    assert missing == [] and not re.search(r"(?:https?:)?//", " ".join(_local_links(page)))


def test_unit_page_rf_image_is_the_normalised_stored_map(visual_site: ReportResult) -> None:
    """Each unit's RF heat PNG holds, as palette indices, its stored map min-max scaled, with
    a heat palette; the page states the record's size and centre offset."""
    job = open_job(_job(visual_site))
    fields = arrays.open_array(job.job.receptive_fields_zarr, LAYER)[:]
    recs = [r for r in job.records(LAYER) if r.receptive_field is not None]
    assert len(recs) == 8
    for rec in recs:
        img = Image.open(Path(str(visual_site.out)) / f"units/{LAYER}/{rec.unit}_rf.png")
        assert img.mode == "P" and img.size == (16, 16)
        np.testing.assert_array_equal(np.asarray(img), _scaled(fields[rec.unit]))
        palette = np.asarray(img.getpalette()[:768]).reshape(256, 3)
        assert palette[0].tolist() == [0, 0, 0] and palette[255].tolist() == [255, 255, 255]
        page = _read(visual_site, f"units/{LAYER}/{rec.unit}.html")
        rf = rec.receptive_field
        assert f'src="{rec.unit}_rf.png"' in page and f"size {rf.size:.1f} px" in page
        if rf.offset is not None:
            assert f"({rf.offset[0]:.1f}, {rf.offset[1]:.1f}) px" in page


def test_layer_page_summarises_the_fields(visual_site: ReportResult) -> None:
    """The layer page's size histogram counts every unit with a field once, and its grid
    shows one thumbnail per such unit linking its unit page."""
    job = open_job(_job(visual_site))
    sizes = [r.receptive_field.size for r in job.records(LAYER) if r.receptive_field]
    page = _read(visual_site, f"layers/{LAYER}.html")
    section = page[page.index('<section id="rf"'):page.index("</section>",
                                                             page.index('<section id="rf"'))]
    table = section[section.index("<tbody>"):section.index("</tbody>")]
    counts = [int(c) for c in re.findall(r"<td>[\d.]+</td><td>[\d.]+</td><td>(\d+)</td>",
                                         table)]
    assert sum(counts) == len(sizes) == 8
    thumbs = re.findall(r'href="(\.\./units/features/\d+\.html)"><img class="pixelated" '
                        r'src="(\.\./img/features/\d+_rf\.png)"', section)
    assert len(thumbs) == 8 and all(Image.open(
        Path(str(visual_site.out)) / "layers" / src).size == (64, 64) for _, src in thumbs)


def _jet(v: np.ndarray) -> np.ndarray:
    return np.clip(1.5 - np.abs(4.0 * v[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)


def test_attribution_overlays_are_the_stored_maps_normalised(visual_site: ReportResult
                                                             ) -> None:
    """Every method's overlay PNG, for each of the 2 targets (top_k: 2), equals
    jet(min-max(stored map)) blended half and half with the image and scaled by its maximum
    (show_cam_on_image), per readable image; the page names each target's class (from the
    classes file) and its softmax probability, computed here from the model."""
    job = open_job(_job(visual_site))
    store, bad = job.job.attribution_zarr, job.bad_images()
    good = [i for i in range(8) if i not in bad]
    assert len(good) == 6
    for i in good:
        image = job.image(i).astype(np.float64)  # 16 px: what the network saw
        for m, k in itertools.product(METHODS, range(2)):
            heat = _scaled(arrays.open_array(store, m)[i, k]) / 255.0
            assert heat.max() > 0, (i, m, k)
            blend = 0.5 * _jet(heat) + 0.5 * image / 255.0
            want = np.rint(255 * blend / blend.max())
            rel = f"attribution/{i}_{m}.png" if k == 0 else f"attribution/{i}_t{k}_{m}.png"
            got = _png(visual_site, rel).astype(np.float64)
            assert np.abs(got - want).max() <= 1, (i, m, k)
    page = _read(visual_site, "attribution.html")
    model = tiny_classifier().eval()
    for i in good:
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(job.image(i).copy()).permute(2, 0, 1)[None]
                                        .float() / 255.0).double(), 1)[0]
        top = probs.argsort(descending=True)[:2].tolist()
        assert arrays.open_array(store, "targets")[i].tolist() == top
        section = page[page.index(f'id="image-{i}"'):]
        section = section[:section.index("</section>")]
        for t in top:
            assert (f"Target: <strong>class {t} ({CLASSES[t]})</strong> &middot; probability "
                    f"{100 * float(probs[t]):.1f}%") in section
    for i in bad:
        assert not (Path(str(visual_site.out)) / f"attribution/{i}_gradcam.png").exists()


def test_gradcam_crop_mask_and_image(visual_site: ReportResult) -> None:
    """The crop image is the image cut to the stored box; the mask image keeps the image
    where the normalised Grad-CAM is >= 0.3 and dims it to 0.2 elsewhere."""
    job = open_job(_job(visual_site))
    store = job.job.attribution_zarr
    for i in (0, 4):
        image = job.image(i)
        top, left, bottom, right = arrays.open_array(store, "crop_boxes")[i].tolist()
        np.testing.assert_array_equal(_png(visual_site, f"attribution/{i}_crop.png"),
                                      image[top:bottom, left:right])
        heat = arrays.open_array(store, "gradcam")[i, 0].astype(np.float64)
        inside = (heat - heat.min()) / (heat.max() - heat.min()) >= 0.3
        want = np.where(inside[..., None], image, np.rint(0.2 * image.astype(np.float64)))
        np.testing.assert_array_equal(_png(visual_site, f"attribution/{i}_crop_mask.png"),
                                      want.astype(np.uint8))


def test_feature_maps_and_filters_grids(visual_site: ReportResult) -> None:
    """Feature maps of each of the two ``feature_layers`` (6 and 8 channels): the stored grey
    maps side by side, each enlarged 2x (to >= 28 px) with 2-px white gaps, equal to the
    layers' maps computed here; filters: 6 RGB 3 x 3 filters enlarged 16x."""
    job = open_job(_job(visual_site))
    model = tiny_classifier().eval()
    x = torch.from_numpy(job.image(0).copy()).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        want = {"features.1": model.features[:2](x)[0], "features": model.features(x)[0]}
    for k, (layer, channels) in enumerate((("features.1", 6), ("features", 8))):
        maps = arrays.open_array(job.job.attribution_zarr, f"feature_maps.{layer}")[0]
        ref = want[layer].double().numpy()
        low, high = ref.min((1, 2), keepdims=True), ref.max((1, 2), keepdims=True)
        scaled = np.rint(255 * (ref - low) / np.where(high > low, high - low, 1))
        assert maps.shape == (channels, 16, 16)
        assert np.abs(maps.astype(int) - scaled).max() <= 1
        grid = _png(visual_site, f"attribution/0_features_{k}.png")
        assert grid.shape == (32, channels * 34 - 2)
        for c in range(channels):
            tile = grid[:, c * 34:c * 34 + 32]
            np.testing.assert_array_equal(tile, np.kron(maps[c], np.ones((2, 2), np.uint8)))
    filters = np.load(_job(visual_site) / "attribution" / "weights.npz")["weights"]
    weights = _png(visual_site, "attribution/weights.png")
    assert weights.shape == (48, 6 * 50 - 2, 3)
    np.testing.assert_array_equal(weights[:48, 50:98], np.kron(filters[1], np.ones((16, 16, 1),
                                                                                    np.uint8)))


def test_prism_page_lists_the_stored_results(visual_site: ReportResult) -> None:
    """The variance table holds every stored ratio; each readable image's PRISM PNG is its
    stored rgb, its fused PNG that rgb with the stored Grad-CAM alpha (and its split-RGB
    panels the stored ones); the colours listed are its stored
    presence; clusters group the images."""
    job = open_job(_job(visual_site))
    store, bad = job.job.prism_zarr, job.bad_images()
    page = _read(visual_site, "prism.html")
    variance = arrays.open_array(store, "variance")[:]
    table = page[page.index('id="variance-table"'):]
    table = table[:table.index("</table>")]
    assert re.findall(r'<td class="num">([\d.]+)</td><td class="num">', table) == \
        [f"{v:.6f}" for v in variance]
    rgb, presence = arrays.open_array(store, "rgb")[:], arrays.open_array(store, "presence")[:]
    for i in (i for i in range(8) if i not in bad):
        want = np.rint(255 * np.clip(rgb[i], 0, 1)).transpose(1, 2, 0)
        np.testing.assert_array_equal(_png(visual_site, f"prism/{i}_rgb.png"), want)
        alpha = np.rint(255 * arrays.open_array(store, "alpha")[i, 0])
        np.testing.assert_array_equal(_png(visual_site, f"prism/{i}_rgba.png"),
                                      np.concatenate([want, alpha[..., None]], axis=-1))
        figure = page[page.index(f'id="image-{i}"'):]
        figure = figure[:figure.index("</figure>")]
        assert [int(c) for c in re.findall(r"code (\d+) =", figure)] == \
            np.flatnonzero(presence[i]).tolist()
        classes, probs = (arrays.open_array(store, n)[i] for n in ("top_classes", "top_probs"))
        shown = re.search(r"top-3: ([^<]*)</span>", figure)
        assert shown is not None
        assert [float(v) for v in re.findall(r" (\d\.\d\d)", shown.group(1))] == \
            [round(float(q), 2) for q in probs]
        assert len(shown.group(1).split(" · ")) == len(classes) == 3
    split = arrays.open_array(store, "split")[:]
    for c in range(3):
        want = np.rint(255 * np.clip(split[0, c], 0, 1)).transpose(1, 2, 0)
        np.testing.assert_array_equal(_png(visual_site, f"prism/0_split{c}.png"), want)
    clusters = arrays.open_array(store, "clusters")[:]
    section = page[page.index('id="clusters"'):]
    for c in sorted(set(clusters.tolist()) - {-1}):
        block = section[section.index(f"Cluster {c} "):]
        block = block[:block.index("</ul>")]
        assert [int(i) for i in re.findall(r'href="#image-(\d+)"', block)] == \
            np.flatnonzero(clusters == c).tolist()


def test_prism_page_says_when_no_colour_is_common(visual_site: ReportResult,
                                                   tmp_path: Path) -> None:
    """The inclusive job's page warns exactly when its stored presence has no colour at all
    (no colour common to every valid image); with that presence emptied, the rebuilt page
    warns, naming the number of valid images."""
    job_dir = _job(visual_site)
    presence = arrays.open_array(open_job(job_dir).job.prism_zarr, "presence")[:]
    page = _read(visual_site, "prism.html")
    assert ("no colour is common" in page) == (not presence.any())
    copy = tmp_path / "job"
    shutil.copytree(job_dir, copy, ignore=shutil.ignore_patterns("report"))
    job = open_job(copy)
    bad = job.bad_images()
    arr = zarr.open_array(str(copy / "prism.zarr"), path="data/presence", mode="r+")
    arr[:] = np.zeros_like(presence)
    site = build_report(JobResults(copy), copy / "report")
    text = (Path(str(site.out)) / "prism.html").read_text()
    valid = len(presence) - len([i for i in bad if i < len(presence)])
    assert f"no colour is common to all {valid} images" in text


def test_rf_panel_shows_each_top_image_its_map_and_the_box(visual_site: ReportResult) -> None:
    """Each unit page with a field shows the seed's panel: row 1 the top images as the network
    saw them, row 2 their stored per-image maps in the heat palette, row 3 the overlay with a
    red box where :func:`box` puts the field; one column per kept top image."""
    from ray_dissect.report import visual_tiles as vt
    from ray_dissect.report.rf_panel import GAP, TILE, _resize, _tile_box, kept_maps

    results = JobResults(_job(visual_site))
    size = results.spec.model.preprocess.size
    kept = kept_maps(results, LAYER, (0, 10**6))
    assert kept
    checked = 0
    for rec in results.records(LAYER):
        page = Path(str(visual_site.out)) / f"units/{LAYER}/{rec.unit}.html"
        if rec.receptive_field is None or not page.exists():
            continue
        maps = kept[rec.unit]
        shown = _png(visual_site, f"units/{LAYER}/{rec.unit}_rf_panel.png")
        k = int((maps.images >= 0).sum())
        assert shown.shape == (3 * TILE + 2 * GAP, k * TILE + (k - 1) * GAP, 3)
        assert maps.images[:k].tolist() == [t.index for t in rec.top_images[:k]]
        for j in range(k):
            x = j * (TILE + GAP)
            image = vt.network_view(results.image(int(maps.images[j])), size)
            np.testing.assert_array_equal(shown[:TILE, x:x + TILE], _resize(image))
            np.testing.assert_array_equal(shown[TILE + GAP:2 * TILE + GAP, x:x + TILE],
                                          _resize(vt.HOT[vt.display(maps.maps[j])]))
            where = _tile_box(rec.receptive_field, maps.centres[j], size)
            tile = shown[2 * (TILE + GAP):, x:x + TILE]
            if where is not None:
                top, left, bottom, right = where
                assert (tile[top, left:right + 1] == [255, 0, 0]).all()
                assert (tile[top:bottom + 1, right] == [255, 0, 0]).all()
        assert f'src="{rec.unit}_rf_panel.png"' in page.read_text()
        checked += 1
    assert checked


def test_rf_box_is_the_fields_square_at_the_peak() -> None:
    from ray_dissect.report.rf_panel import box, draw_box

    assert box(5.0, np.array([10.0, 20.0]), (1.0, -2.0), 64) == (9, 16, 13, 20)
    assert box(5.0, np.array([0.0, 0.0]), (0.0, 0.0), 64) == (0, 0, 2, 2)  # clipped
    assert box(4.0, np.array([100.0, 100.0]), (0.0, 0.0), 64) is None
    drawn = draw_box(np.zeros((8, 8, 3), np.uint8), (2, 3, 5, 6))
    red = (drawn == [255, 0, 0]).all(axis=-1)
    want = np.zeros((8, 8), bool)
    want[2, 3:7] = want[5, 3:7] = want[2:6, 3] = want[2:6, 6] = True
    np.testing.assert_array_equal(red, want)


def test_jobs_without_the_stages_show_nothing_of_them(clustered_site: ReportResult) -> None:
    """A job without analyses has no attribution or PRISM page, no nav link to them, no
    receptive-field section and no RF image."""
    out = Path(str(clustered_site.out))
    assert not (out / "attribution.html").exists() and not (out / "prism.html").exists()
    assert not (out / "attribution").exists() and not (out / "prism").exists()
    assert list(out.rglob("*_rf.png")) == []
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "attribution.html" not in text and "prism.html" not in text, page
        assert 'id="rf"' not in text, page


def test_builds_are_byte_identical_whichever_way_blocks_render(
        visual_site: ReportResult, tmp_path: Path) -> None:
    """A second build, whose blocks are rendered by a renderer opening the job afresh in
    reverse order (as Ray tasks do), writes the same bytes for every file."""
    job = _job(visual_site)

    def fresh(calls, root, options):
        for layer, units, classes, nav in reversed(list(calls)):
            yield render_block(str(job), layer, units, root, options, classes, nav)

    other = tmp_path / "report"
    build_report(JobResults(job), other, renderer=fresh)
    first = Path(str(visual_site.out))
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    assert [n for n in names if (first / n).read_bytes() != (other / n).read_bytes()] == []
    assert any(str(n).endswith("_rf.png") for n in names)


def test_a_changed_rf_map_redraws_its_block(visual_site: ReportResult, tmp_path: Path) -> None:
    """Rebuilding after the stored RF maps changed redraws the unit images (the block's
    done-marker digest covers the maps)."""
    job = tmp_path / "job"
    shutil.copytree(_job(visual_site), job, ignore=shutil.ignore_patterns("report"))
    build_report(JobResults(job), job / "report")
    store = JobResults(job).job.receptive_fields_zarr
    fields = arrays.open_array(store, LAYER)[:]
    fields[3] = np.arange(256, dtype=np.float32).reshape(16, 16)
    arrays.write_shard(store, LAYER, 0, len(fields), fields)
    build_report(JobResults(job), job / "report")
    got = np.asarray(Image.open(job / "report" / f"units/{LAYER}/3_rf.png"))
    np.testing.assert_array_equal(got, _scaled(fields[3]))
