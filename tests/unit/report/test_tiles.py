"""Tiles: the scored mask, the dimming, the contour and the concept outline, the geometry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ray_dissect.concepts.masks import unit_masks
from ray_dissect.report import tiles as tl


def _image(size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(40, 255, (size, size, 3), dtype=np.uint8)


def test_range_mask_is_the_mask_the_scoring_counts() -> None:
    """Per image, the tile mask has exactly the pixels scoring's unit_masks counts, for a
    strict quantile range and for an inclusive k-means range."""
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(6, 1, 4, 4)).astype(np.float32)
    sets = np.zeros((6, 16, 16), np.int64)
    for lo, hi, inclusive in ((0.5, np.inf, False), (-0.2, 0.7, True)):
        (sig,) = unit_masks(acts, np.array([lo]), np.array([hi]), sets, 0, np.ones(6, bool),
                            inclusive)
        ours = tl.range_mask(acts[:, 0], (16, 16), lo, None if np.isinf(hi) else hi, inclusive)
        per_image = np.bincount(sig.images, weights=sig.counts, minlength=6)
        assert ours.sum(axis=(1, 2)).tolist() == per_image.astype(int).tolist()


def test_range_mask_bounds_follow_inclusive() -> None:
    """A value equal to a bound is inside an inclusive range and outside a strict one."""
    maps = np.array([[[1.0, 2.0], [3.0, 4.0]]], np.float32)
    assert tl.range_mask(maps, (2, 2), 2.0, 3.0, True)[0].tolist() == [[False, True],
                                                                      [True, False]]
    assert not tl.range_mask(maps, (2, 2), 2.0, 3.0, False).any()
    assert tl.range_mask(maps, (2, 2), 3.0, None, False)[0].tolist() == [[False, False],
                                                                        [False, True]]


def test_mask_view_dims_outside_and_draws_the_contour_just_outside() -> None:
    """Inside the mask the image is unchanged; outside, away from the contour, it is 0.2 x;
    the yellow contour lies just outside the mask, the black halo just outside that."""
    img = _image()
    mask = np.zeros((16, 16), bool)
    mask[5:10, 4:12] = True
    tile = tl.compose_tile(img, mask, None, 16, "mask", tl.DEFAULT_STYLE)
    assert (tile[mask] == img[mask]).all()
    ring = np.zeros_like(mask)
    ring[4:11, 3:13] = True
    ring &= ~mask
    halo = np.zeros_like(mask)
    halo[3:12, 2:14] = True
    halo &= ~(mask | ring)
    assert (tile[ring] == tl.CONTOUR_RGB).all() and (tile[halo] == tl.HALO_RGB).all()
    far = ~(mask | ring | halo)
    expected = np.clip(np.rint(img[far].astype(np.float32) * np.float32(0.2)), 0, 255)
    assert (tile[far] == expected.astype(np.uint8)).all()


def test_raw_view_and_ndl_style() -> None:
    """The raw view is the resized image; NetDissect-Lite's style draws no contour."""
    img = _image()
    mask = np.zeros((16, 16), bool)
    mask[2:6, 2:6] = True
    assert (tl.compose_tile(img, mask, None, 16, "raw", tl.DEFAULT_STYLE) == img).all()
    ndl = tl.compose_tile(img, mask, None, 16, "mask", tl.NDL_STYLE)
    expected = np.where(mask[..., None], img, np.rint(img * np.float32(0.2)))
    assert (ndl == expected.astype(np.uint8)).all()


def test_concept_view_outlines_the_concept_with_dashes() -> None:
    """The dashed blue outline lies on the concept mask's inner boundary, with gaps."""
    img = np.full((16, 16, 3), 200, np.uint8)
    mask = np.ones((16, 16), bool)
    concept = np.zeros((16, 16), bool)
    concept[3:13, 3:13] = True
    tile = tl.compose_tile(img, mask, concept, 16, "concept", tl.DEFAULT_STYLE)
    blue = (tile == tl.CONCEPT_RGB).all(axis=2)
    inner = np.zeros_like(concept)
    inner[4:12, 4:12] = True
    boundary = concept & ~inner
    assert blue.any() and not (blue & ~boundary).any()
    assert (boundary & ~blue).any()  # dashes, not a solid line


def test_mask_is_resized_by_nearest_neighbour() -> None:
    """A 2 x 2 mask becomes four 4 x 4 blocks on an 8-px tile."""
    mask = np.array([[True, False], [False, True]])
    big = tl.resize_nearest(mask, 8)
    assert big[:4, :4].all() and not big[:4, 4:].any() and big[4:, 4:].all()


def test_strip_geometry_matches_netdissect_lite() -> None:
    """Ten 224-px tiles with 3-px gaps make NetDissect-Lite's 2267 x 224 strip, gaps white."""
    tiles = np.zeros((10, 224, 224, 3), np.uint8)
    out = tl.strip(tiles, tl.NDL_STYLE.size, tl.NDL_STYLE.gap)
    assert out.shape == (224, 2267, 3)
    assert (out[:, 224:227] == 255).all() and (out[:, :224] == 0).all()


def test_sprite_geometry() -> None:
    """A sprite has one row per range and at most sprite_tiles thumbnails per row."""
    style = tl.DEFAULT_STYLE
    rows = [np.zeros((7, 64, 64, 3), np.uint8), np.zeros((2, 64, 64, 3), np.uint8)]
    out = tl.sprite(rows, style)
    assert out.shape == (2 * 64 + 2, 5 * 64 + 4 * 2, 3)
    assert (out[66:, 2 * 66:] == 255).all()


def test_jpeg_is_deterministic() -> None:
    """The same pixels give the same JPEG bytes, which decode to the right size."""
    img = _image(32)
    a, b = tl.encode_jpeg(img, 85), tl.encode_jpeg(img.copy(), 85)
    assert a == b and Image.open(io.BytesIO(a)).size == (32, 32)


def test_formula_mask_evaluates_leaves_and_operators() -> None:
    """(1 OR 2) AND NOT 3 on two pixel layers plus a whole-image label."""
    pixel = np.array([[[1, 2, 0, 3]], [[0, 3, 0, 0]]], np.int32)  # (2 layers, 1, 4)
    node = {"op": "and", "left": {"op": "or", "left": {"op": "leaf", "concept": 1},
                                  "right": {"op": "leaf", "concept": 2}},
            "right": {"op": "not", "child": {"op": "leaf", "concept": 3}}}
    assert tl.formula_mask(node, pixel, np.array([], np.int32))[0].tolist() == [
        True, False, False, False]
    whole = {"op": "leaf", "concept": 9}
    assert tl.formula_mask(whole, pixel, np.array([9], np.int32)).all()


@pytest.mark.parametrize(("a", "b", "iou"), [((0, 4), (2, 6), 2 / 6), ((0, 0), (0, 0), 0.0)])
def test_tile_iou(a: tuple[int, int], b: tuple[int, int], iou: float) -> None:
    """IoU of two masks on one image (0 when both are empty)."""
    x, y = np.zeros(8, bool), np.zeros(8, bool)
    x[a[0]:a[1]], y[b[0]:b[1]] = True, True
    assert tl.tile_iou(x, y) == pytest.approx(iou)


def _composite(base: np.ndarray, png: bytes) -> np.ndarray:
    """Alpha-composite an overlay PNG over (H, W, 3) uint8 pixels, as a browser does."""
    over = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).astype(np.float64)
    alpha = over[..., 3:] / 255
    return np.rint(over[..., :3] * alpha + base * (1 - alpha)).astype(np.uint8)


def test_overlays_over_the_raw_tiles_are_the_baked_views() -> None:
    """The overlay PNG strip over the raw tiles (gaps clear) gives the mask view exactly
    (outside at 51/255 = 0.2, contour, halo) and, with the concept overlay on top, the
    concept view; the raw tiles show through untouched where the mask holds."""
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    masks = rng.random((3, 8, 8)) > 0.5
    concepts = rng.random((3, 8, 8)) > 0.6
    style = tl.DEFAULT_STYLE
    sources = [tl.source(img, 16, style) for img in images]
    baked = tl.compose_row(sources, masks, concepts, ["mask", "concept"], style)
    shown, outline = tl.overlay_indices(masks, concepts, 16, style)
    assert outline is not None
    raw = tl.strip([s.base for s in sources], 16, 2)
    mask_view = _composite(raw, tl.encode_overlay(shown, 16, 2))
    assert np.abs(mask_view.astype(int) - tl.strip(baked["mask"], 16, 2)).max() <= 1
    concept_view = _composite(mask_view, tl.encode_overlay(outline, 16, 2))
    assert np.abs(concept_view.astype(int) - tl.strip(baked["concept"], 16, 2)).max() <= 1
    inside = tl.resize_nearest(masks, 16)
    assert (mask_view[:, :16][inside[0]] == images[0][inside[0]]).all()


def test_baked_heat_view_is_the_heat_overlay_over_the_raw_tiles() -> None:
    """``--style`` without overlays bakes the heat view: the same pixels (to one grey level)
    as the heat PNG composited over the raw tiles; the map's peak is red, its floor blue."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    maps = rng.random((2, 4, 4)).astype(np.float32)
    style = tl.DEFAULT_STYLE
    sources = [tl.source(img, 16, style) for img in images]
    levels = tl.heat_levels(maps, 16)
    baked = tl.compose_row(sources, None, None, ["heat"], style, levels)["heat"]
    raw = tl.strip([s.base for s in sources], 16, 2)
    shown = _composite(raw, tl.encode_overlay(levels, 16, 2, tl.heat_palette()))
    assert np.abs(shown.astype(int) - tl.strip(baked, 16, 2)).max() <= 1
    assert levels.max() == tl.HEAT_LEVELS and levels.min() == 1
    palette = tl.heat_palette()
    assert palette[1][:3] == (0, 0, 128) and palette[tl.HEAT_LEVELS][:3] == (128, 0, 0)
