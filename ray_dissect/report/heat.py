"""The unit pages' heat view at the maps' own resolution, coloured by the browser.

A row's heat overlay used to be a PNG strip at tile size (each map upsampled to 112 px, cut
into 32 jet steps): ~14 KB per row, a third of the demo report. It is now one small greyscale
PNG per row holding the row's (h, w) maps themselves (a 7 x 7 map is 49 values), and the page
does the rest, as a browser does it for any image:

- **values**: each map min-max scaled over the whole row (so tiles compare, as before), stored
  as ``1 + rint(254 * scaled)`` (1..255); 0 (transparent through the PNG's ``tRNS``) marks a
  non-finite value;
- **layout**: the maps side by side, each framed by a 1-px copy of its own edge
  (:data:`PAD`), so the browser's bilinear scaling of one cell never reads its neighbour (the
  frame plays the role of ``align_corners=False``'s edge clamp);
- **scaling**: each tile is a box of the tile's size whose background is its cell, scaled
  smoothly (bilinear) by the browser: the map upsampled to the tile as the old overlay was;
- **colour**: an SVG filter (:func:`jet_filter`) maps the scaled value to jet through
  ``feComponentTransfer`` tables. Jet is piecewise linear with knots at multiples of 1/8, so a
  9-entry ``table`` per channel is jet itself (continuous: no 32-step banding); alpha 0.6 as
  before.

So what the page shows is ``jet(bilinear(map))`` over the raw tile at 0.6, within the 8-bit
precision of the browser's scaling and filter.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PAD = 1
ALPHA = 0.6
KNOTS = 9
"""Jet's channels are linear between v = i / 8, i = 0..8."""


def row_scaled(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A row's values min-max scaled over all of its finite ones (so its tiles compare).

    Args:
        values: (...) float maps of one row (at their own size, or upsampled).

    Returns:
        scaled: (...) float64 ``(v - lo) / (hi - lo)`` with lo, hi the finite min and max (0
            everywhere when they are equal or none is finite; 0 where ``v`` is not finite).
        finite: (...) bool, where ``v`` is finite.
    """
    m = np.asarray(values, dtype=np.float64)
    fin = np.isfinite(m)
    if not fin.any():
        return np.zeros(m.shape), fin
    low, high = float(m[fin].min()), float(m[fin].max())
    scaled = (m - low) / (high - low) if high > low else np.zeros_like(m)
    return np.where(fin, scaled, 0.0), fin


def heat_values(maps: np.ndarray) -> np.ndarray:
    """A row's maps as the heat PNG's values.

    Args:
        maps: (k, h, w) float activation maps of one unit (the row's images).

    Returns:
        (k, h, w) uint8: ``1 + rint(254 * scaled)`` (:func:`row_scaled`), 0 where a value is
        not finite.
    """
    scaled, fin = row_scaled(maps)
    return np.where(fin, 1 + np.rint(254.0 * scaled), 0).astype(np.uint8)


def heat_sprite(values: np.ndarray) -> np.ndarray:
    """(k, h, w) uint8 values -> (h + 2 PAD, k (w + 2 PAD)) uint8: the maps side by side, each
    framed by a copy of its own edge pixels."""
    framed = np.pad(values, ((0, 0), (PAD, PAD), (PAD, PAD)), mode="edge")
    return np.concatenate(list(framed), axis=1)


def encode_heat(values: np.ndarray) -> bytes:
    """(k, h, w) uint8 values -> the row's greyscale PNG (:func:`heat_sprite`; value 0
    transparent; fixed settings, same input same bytes)."""
    pixels = heat_sprite(values)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG", optimize=True, transparency=0)
    return buffer.getvalue()


def jet_tables() -> tuple[str, str, str]:
    """``tableValues`` of the red, green and blue ``feFuncX type="table"``: jet at i / 8."""
    from ray_dissect.visualize.display import jet

    rgb = jet(np.arange(KNOTS) / (KNOTS - 1))
    red, green, blue = (" ".join(f"{v:g}" for v in rgb[:, c]) for c in range(3))
    return red, green, blue


def jet_filter() -> str:
    """The page's ``<svg>`` holding filter ``#jet`` (value -> jet colour, alpha x 0.6), in the
    sRGB space the PNG's values are stored in (the default linearRGB would bend them)."""
    r, g, b = jet_tables()
    return ('<svg class="defs" width="0" height="0" aria-hidden="true"><filter id="jet" '
            'color-interpolation-filters="sRGB"><feComponentTransfer>'
            f'<feFuncR type="table" tableValues="{r}"/><feFuncG type="table" '
            f'tableValues="{g}"/><feFuncB type="table" tableValues="{b}"/>'
            f'<feFuncA type="linear" slope="{ALPHA:g}"/></feComponentTransfer></filter></svg>')
