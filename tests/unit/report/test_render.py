"""The render work unit: histograms, captions and files of a block; resumable, byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_dissect.concepts.masks import unit_masks
from ray_dissect.job.layout import done_marker
from ray_dissect.report import tiles as tl
from ray_dissect.report.draw import HIST_BINS, row_plans
from ray_dissect.report.meta import ReportOptions
from ray_dissect.report.render import meta_path, render_block
from ray_dissect.results import JobResults

LAYER = "body.out"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_histograms_equal_numpy_over_all_valid_activations(clustered: JobResults,
                                                           tmp_path: Path) -> None:
    """Each unit's 32 bins are numpy.histogram of its finite non-zero values on [min, max];
    zeros are counted apart."""
    block = render_block(clustered, LAYER, (0, 4), tmp_path / "r")
    acts = np.asarray(clustered.activations(LAYER)[:, 0:4])
    for k, unit in enumerate(block.tiles):
        v = acts[:, k].ravel()
        nz = v[np.isfinite(v) & (v != 0)]
        counts, edges = np.histogram(nz, HIST_BINS, (nz.min(), nz.max()))
        assert unit.histogram.counts == counts.tolist()
        assert unit.histogram.edges == pytest.approx(edges.tolist())
        assert unit.histogram.zeros == int((v == 0).sum())


def test_captions_count_the_scored_mask(clustered: JobResults, tmp_path: Path) -> None:
    """Each tile's in-range pixels are what scoring's unit_masks counts on that image, and
    the rows follow the records' top images."""
    block = render_block(clustered, LAYER, (4, 6), tmp_path / "r")
    acts = np.asarray(clustered.activations(LAYER)[:], dtype=np.float32)
    sets = np.zeros((len(acts), *clustered.dataset.mask_shape), np.int64)
    for unit in block.tiles:
        rec = clustered.records(LAYER)[unit.unit]
        assert [r.key for r in unit.rows] == [p.key for p in row_plans(rec)]
        e = rec.explanations[1]
        row = next(r for r in unit.rows if r.key == f"r{e.range_index}")
        hi = np.inf if e.hi is None else e.hi
        (sig,) = unit_masks(acts[:, unit.unit:unit.unit + 1], np.array([e.lo]),
                            np.array([hi]), sets, 0, np.ones(len(acts), bool), e.inclusive)
        per_image = np.bincount(sig.images, weights=sig.counts, minlength=len(acts))
        assert [t.pixels for t in row.tiles] == [int(per_image[t.index]) for t in row.tiles]
        assert [t.index for t in row.tiles] == [t.index for t in e.top_images]  # type: ignore[attr-defined]


def test_strip_pixels_are_the_composed_tiles(clustered: JobResults, tmp_path: Path) -> None:
    """A unit page row shows each image once for the report (img/src/<size>/<index>.webp, the
    resized source, lossy tolerance) under its overlay PNG, which dims exactly the pixels
    outside the scored mask (away from the contour) and has the stated width and height."""
    block = render_block(clustered, LAYER, (6, 7), tmp_path / "r")
    (unit,) = block.tiles
    row = next(r for r in unit.rows if r.kind == "range")
    assert row.overlay and set(row.files) == {"mask", "concept", "heat"}
    for t in row.tiles[:3]:
        got = np.asarray(Image.open(tmp_path / "r" / "img" / "src" / str(row.height)
                                    / f"{t.index}.webp").convert("RGB"))
        want = tl.resize_image(clustered.dataset.read_image(t.index), row.height)
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 8  # WebP q85
    over = np.asarray(Image.open(tmp_path / "r" / row.files["mask"]).convert("RGBA"))
    assert over.shape == (row.height, row.width, 4)
    rec = clustered.records(LAYER)[6]
    e = rec.explanations[row.range_index or 0]
    acts = np.asarray(clustered.activations(LAYER)[:, 6], dtype=np.float32)
    first = row.tiles[0].index
    mask = tl.range_mask(acts[first:first + 1], clustered.dataset.mask_shape, e.lo, e.hi,
                         e.inclusive)
    inside = tl.resize_nearest(mask, row.height)[0]
    ring, halo = tl.contour(inside)
    tile = over[:, :row.height]
    assert (tile[inside][:, 3] == 0).all() and (tile[ring | halo][:, 3] == 255).all()
    assert (tile[~(inside | ring | halo)][:, 3] == 204).all()
    assert inside.sum() == row.tiles[0].pixels * (row.height // mask.shape[-1]) ** 2


def test_rerun_is_skipped_and_a_redo_is_byte_identical(clustered: JobResults,
                                                       tmp_path: Path) -> None:
    """A done block is not redone; without its marker it is redone to the same bytes."""
    out = tmp_path / "r"
    first = render_block(clustered, LAYER, (0, 3), out)
    before = _files(out)
    sprite = out / first.tiles[0].sprite  # type: ignore[operator]
    stamp = sprite.stat().st_mtime_ns
    assert render_block(clustered, LAYER, (0, 3), out) == first
    assert sprite.stat().st_mtime_ns == stamp
    done_marker(meta_path(out, LAYER, (0, 3))).unlink()
    sprite.unlink()
    assert render_block(clustered, LAYER, (0, 3), out) == first
    assert _files(out) == before


def test_changed_inputs_redo_the_block(clustered: JobResults, tmp_path: Path) -> None:
    """Another tile style, or other classes, change the block's digest: it is redone."""
    out = tmp_path / "r"
    a = render_block(clustered, LAYER, (0, 1), out)
    b = render_block(clustered, LAYER, (0, 1), out, ReportOptions(style="ndl"))
    assert a.digest != b.digest and b.tiles[0].rows[0].height == 224
    c = render_block(clustered, LAYER, (0, 1), out, ReportOptions(style="ndl"), {0: [(2, 1.5, "")]})
    assert c.digest != b.digest
    assert "class 2" in (out / "units" / LAYER / "0.html").read_text()


def test_interpretable_pages_only(clustered: JobResults, tmp_path: Path) -> None:
    """With unit_pages=interpretable a unit below the threshold gets a sprite, no strips."""
    out = tmp_path / "r"
    block = render_block(clustered, LAYER, (0, 12), out, ReportOptions(unit_pages="interpretable"))
    for unit in block.tiles:
        rec = clustered.records(LAYER)[unit.unit]
        passes = rec.interpretable or any(e.iou >= 0.04 for e in rec.explanations)
        assert unit.page == passes and bool(unit.rows) == passes and unit.sprite
        assert (out / "units" / LAYER / f"{unit.unit}.html").exists() == passes


def test_records_without_top_images_give_no_tiles(clustered_job: Path, tmp_path: Path) -> None:
    """Records of schema v2 (no top images) render histograms and no image at all."""
    import json
    import shutil

    old = tmp_path / "v2"
    shutil.copytree(clustered_job, old)
    path = old / "records" / f"{LAYER}.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r["schema_version"] = 2
        r.pop("top_images", None)
        for e in r["explanations"]:
            e.pop("top_images", None)
            e.pop("samples", None)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    block = render_block(JobResults(old), LAYER, (0, 2), tmp_path / "r")
    assert all(t.sprite is None and t.rows == [] and t.histogram.counts for t in block.tiles)
    assert not [p for p in (tmp_path / "r").rglob("*") if p.suffix in (".jpg", ".webp")]
