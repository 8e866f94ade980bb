"""Drawing and raster primitives of the dataset generator (:mod:`.generate`).

Coordinates are pixels of an s x s image, ``(x, y)`` in outlines; every array is float32 or
bool so a whole image or a window of it is drawn with a few numpy operations. Shapes are
rasterised with PIL polygons (nested scaled copies give rim/core levels), patterns are boolean
functions of rotated coordinates measured in periods, and materials are precomputed gain tiles.
"""

from __future__ import annotations

import functools
import itertools
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Window = tuple[slice, slice]
HANDLE = 4  # level value of a shape's handle in :meth:`Shape.levels`


def frac(a: np.ndarray) -> np.ndarray:
    """Return ``a - floor(a)`` (same shape; much faster than float ``%`` in numpy)."""
    return a - np.floor(a)


def paint(base: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> None:
    """Set ``base`` ((3, h, w) float32) to colour ``rgb`` ((3,)) where ``mask`` ((h, w) bool)."""
    for c in range(3):
        base[c][mask] = rgb[c]


def pick_color(rng: np.random.Generator, options: Sequence | np.ndarray, jitter: int = 12
               ) -> np.ndarray:
    """Return a ``(3,)`` float32 colour: a random option plus per-channel jitter."""
    base = np.asarray(options[int(rng.integers(len(options)))], dtype=np.float32)
    return base + rng.integers(-jitter, jitter + 1, size=3).astype(np.float32)


def _regular(k: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    """Return the ``(k, 2)`` vertices of a regular k-gon."""
    a = phase + np.arange(k) * 2 * np.pi / k
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def _heart() -> np.ndarray:
    """Return the classic parametric heart, scaled into the unit disc and centred."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([16 * np.sin(t) ** 3, y + 2.5], 1) / 17.0


def _teardrop() -> np.ndarray:
    """Return a disc of radius 0.6 with a tangent point at (0.95, 0)."""
    a0 = np.arccos(0.6 / 1.3)
    a = np.linspace(a0, 2 * np.pi - a0, 31)
    return np.vstack([[0.95, 0.0], np.stack([0.6 * np.cos(a) - 0.35, 0.6 * np.sin(a)], 1)])


_ANG = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_W = 0.33
# (k, 2) unit polygon vertices (x, y), each star-shaped about the origin so that scaled copies
# about it nest; "ellipse", "ring" and "crescent" use the circle.
OUTLINES: dict[str, np.ndarray] = {
    "circle": np.stack([np.cos(_ANG), np.sin(_ANG)], 1),
    "triangle": _regular(3),
    "square": np.array([(0.75, 0.75), (-0.75, 0.75), (-0.75, -0.75), (0.75, -0.75)]),
    "diamond": np.array([(1.0, 0.0), (0.0, 0.6), (-1.0, 0.0), (0.0, -0.6)]),
    "star": np.array([(r * np.cos(a), r * np.sin(a)) for r, a in
                      zip([1.0, 0.45] * 5, np.pi / 2 + np.arange(10) * np.pi / 5, strict=True)]),
    "cross": np.array([(_W, 1), (_W, _W), (1, _W), (1, -_W), (_W, -_W), (_W, -1), (-_W, -1),
                       (-_W, -_W), (-1, -_W), (-1, _W), (-_W, _W), (-_W, 1)], dtype=np.float64),
    "hexagon": _regular(6, 0.95), "pentagon": _regular(5), "octagon": _regular(8, 0.95, 0.39),
    "heart": _heart(), "teardrop": _teardrop(),
    "arrow": 0.9 * np.array([(0.85, 0), (-0.05, 0.6), (-0.05, 0.22), (-1.15, 0.22), (-1.15, -0.22),
                             (-0.05, -0.22), (-0.05, -0.6)]),  # origin in head and shaft
    "chevron": 0.65 * np.array([(0.25, 0), (-0.75, 0.9), (-1.25, 0.9), (-0.25, 0), (-1.25, -0.9),
                                (-0.75, -0.9)]),  # origin on the edge both arms share
    "semicircle": np.stack([np.cos(_ANG[:25]), np.sin(_ANG[:25]) - 0.3], 1),
    "trapezoid": np.array([(0.5, 0.6), (-0.5, 0.6), (-0.85, -0.6), (0.85, -0.6)]),
    "rectangle": np.array([(0.95, 0.4), (-0.95, 0.4), (-0.95, -0.4), (0.95, -0.4)]),
    "parallelogram": np.array([(0.95, 0.45), (-0.35, 0.45), (-0.95, -0.45), (0.35, -0.45)])}
_HOLES = {"ring": (0.55, 0.0), "crescent": (0.85, 0.45)}  # punched circle: radius, x offset
_HANDLE_BAR = np.array([(0.55, 0.13), (1.3, 0.13), (1.3, -0.13), (0.55, -0.13)])


@dataclass(frozen=True)
class Grid:
    """Pixel coordinates (``yy``, ``xx``: float32, full image or a window) of an s x s image."""

    size: int
    yy: np.ndarray
    xx: np.ndarray

    @classmethod
    def make(cls, size: int) -> Grid:
        """Return the full ``(size, size)`` grid."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        return cls(size, yy, xx)

    def crop(self, win: Window) -> Grid:
        """Return the grid restricted to window ``win`` (same image size)."""
        return Grid(self.size, self.yy[win], self.xx[win])

    def rotated(self, theta: float, cy: float = 0.0, cx: float = 0.0) -> tuple[np.ndarray, ...]:
        """Return ``(u, v)``: float32 coordinates (shape of ``xx``) rotated about (cy, cx)."""
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        x, y = self.xx - np.float32(cx), self.yy - np.float32(cy)
        return x * c + y * s, y * c - x * s


@dataclass(frozen=True)
class Canvas:
    """Render state of one image (or a window of it).

    ``base`` is (3, h, w) float32 RGB, ``gain`` (h, w) float32 brightness factor applied on
    output, ``obj``/``mat``/``part1``/``part2`` (h, w) uint16 global-label maps (0 = none).
    """

    base: np.ndarray
    gain: np.ndarray
    obj: np.ndarray
    mat: np.ndarray
    part1: np.ndarray
    part2: np.ndarray

    @classmethod
    def new(cls, s: int) -> Canvas:
        """Return a blank s x s canvas (black, gain 1, no labels)."""
        z = [np.zeros((s, s), np.uint16) for _ in range(4)]
        return cls(np.zeros((3, s, s), np.float32), np.ones((s, s), np.float32), *z)

    def view(self, win: Window) -> Canvas:
        """Return a canvas of views onto the window ``win``."""
        maps = (self.gain, self.obj, self.mat, self.part1, self.part2)
        return Canvas(self.base[:, win[0], win[1]], *(a[win] for a in maps))

    def rgb(self) -> np.ndarray:
        """Return the shaded image as ``(h, w, 3)`` uint8."""
        out = self.base * self.gain
        out += 0.5
        return np.dstack(np.clip(out, 0, 255, out=out).astype(np.uint8))


@dataclass(frozen=True)
class Shape:
    """A foreground shape: pixels, radians, aspect (ellipses), a bar-like handle or not."""

    kind: str
    cy: float
    cx: float
    r: float
    angle: float
    aspect: float
    handle: bool = False

    def window(self, s: int) -> Window:
        """Return the bounding window of the shape clipped to an s x s image."""
        e = (1.4 if self.handle else 1.1) * self.r
        return (slice(max(0, int(self.cy - e)), min(s, int(self.cy + e) + 2)),
                slice(max(0, int(self.cx - e)), min(s, int(self.cx + e) + 2)))

    def _place(self, pts: np.ndarray, centre: np.ndarray, turn: float = 0.0) -> np.ndarray:
        """Return unit points ``pts`` ((k, 2)) scaled, rotated and moved to ``centre``."""
        c, s = np.cos(self.angle + turn), np.sin(self.angle + turn)
        pts = pts * self.r
        return centre + np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1)

    def levels(self, win: Window) -> np.ndarray:
        """Return window-shaped uint8 nesting levels of the shape scaled about its centre.

        0 = outside, 1 = shape, 2 = inside the 0.72-scaled shape, 3 = inside the 0.45-scaled
        one, ``HANDLE`` = the handle.
        """
        pts = OUTLINES["circle" if self.kind in ("ellipse", *_HOLES) else self.kind]
        pts = pts * ([1.0, self.aspect] if self.kind == "ellipse" else 1.0)
        centre = np.array([self.cx - win[1].start, self.cy - win[0].start])
        xy = self._place(pts, centre)
        im = Image.new("L", (win[1].stop - win[1].start, win[0].stop - win[0].start))
        pen = ImageDraw.Draw(im)
        if self.handle:
            pen.polygon(self._place(_HANDLE_BAR, centre, np.pi / 2).ravel().tolist(), fill=HANDLE)
        for level, scale in ((1, 1.0), (2, 0.72), (3, 0.45)):  # nested scaled copies
            pen.polygon((centre + scale * (xy - centre)).ravel().tolist(), fill=level)
        if self.kind in _HOLES:  # a ring's or crescent's hole is punched last
            radius, shift = _HOLES[self.kind]
            hole = OUTLINES["circle"] * radius + (shift, 0.0)
            pen.polygon(self._place(hole, centre).ravel().tolist(), fill=0)
        return np.asarray(im)


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Return the pixels of ``mask`` ((h, w) bool) within ``width`` 4-steps of its outside.

    Pixels beyond the array border count as inside: a cut shape has no outline there.
    """
    inner = mask
    for _ in range(width):
        e = inner.copy()
        e[1:] &= inner[:-1]
        e[:-1] &= inner[1:]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        inner = e
    return mask & ~inner


def _staggered(t: np.ndarray, w: np.ndarray, y0: float) -> np.ndarray:
    """Squared distance to (0, y0) in unit cells whose rows are shifted by half a cell."""
    x, y = frac(t + 0.5 * np.floor(w)) - 0.5, frac(w) - y0
    return x * x + y * y


def _honeycomb(t: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Hexagonal cell walls: the nearest centre of a triangular lattice, then its hex norm."""
    h = np.float32(0.8660254)  # sqrt(3) / 2: row spacing of a unit triangular lattice
    ax, ay = frac(t) - 0.5, frac(w / (2 * h)) * (2 * h) - h
    bx, by = frac(t + 0.5) - 0.5, frac(w / (2 * h) + 0.5) * (2 * h) - h
    nearer_a = ax * ax + ay * ay < bx * bx + by * by
    x, y = np.abs(np.where(nearer_a, ax, bx)), np.abs(np.where(nearer_a, ay, by))
    return np.maximum(x, 0.5 * x + h * y) > 0.4


# Boolean two-colour patterns of float32 coordinates t, w measured in periods.
PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "stripes": lambda t, w: frac(t) < 0.5,
    "dotted": lambda t, w: (frac(t) - 0.5) ** 2 + (frac(w) - 0.5) ** 2 < 0.09,
    "checkered": lambda t, w: frac((np.floor(t) + np.floor(w)) / 2) < 0.25,
    "zigzagged": lambda t, w: frac(w + np.abs(frac(t) - 0.5)) < 0.5,
    "grid": lambda t, w: (frac(t) < 0.2) | (frac(w) < 0.2),
    "wavy": lambda t, w: frac(w + 0.3 * np.sin(np.pi * t)) < 0.5,
    "crosshatched": lambda t, w: (frac(t + w) < 0.2) | (frac(t - w) < 0.2),
    "spiralled": lambda t, w: np.sin(6.2832 * np.hypot(t, w) + 3 * np.arctan2(w, t)) > 0,
    "blotchy": lambda t, w: np.sin(2.1 * t) + np.sin(1.7 * w + np.sin(t)) > 0.5,
    "banded": lambda t, w: (frac(t / 3) < 0.4) | (np.abs(frac(t / 3) - 0.6) < 0.05),
    "lined": lambda t, w: frac(t) < 0.15, "honeycombed": _honeycomb,
    "scaly": lambda t, w: np.abs(_staggered(t, w, 0.0) - 0.245) < 0.055,  # fish-scale arcs
    "woven": lambda t, w: np.where(  # basket weave: 3 threads per cell, alternating direction
        frac((np.floor(t) + np.floor(w)) / 2) < 0.25, frac(3 * w) < 0.5, frac(3 * t) < 0.5),
    "polka-dotted": lambda t, w: _staggered(t, w, 0.5) < 0.14}
PATTERNS["spots"] = PATTERNS["dotted"]


def pattern_mask(name: str, rng: np.random.Generator, g: Grid, period: float) -> np.ndarray:
    """Return a bool pattern (shape of ``g.xx``) with random orientation and origin."""
    cy, cx = rng.uniform(0, g.size, size=2)
    u, v = g.rotated(rng.uniform(0, np.pi), cy, cx)
    p = np.float32(max(period, 3.0))
    return PATTERNS[name](u / p, v / p)


def _noise(g: Grid, seed: int) -> np.ndarray:
    """Fixed per-pixel uniform noise (placement of a tile varies per use)."""
    return np.random.default_rng(seed).random(g.xx.shape, dtype=np.float32)


def _brick(g: Grid, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mortar lines in a running bond."""
    h = max(3.0, 0.07 * g.size)
    shift = 2 * h * frac(np.floor(g.yy / h) / 2)  # odd rows shifted by half a brick
    mortar = (frac(g.yy / h) < 0.18) | (frac((g.xx + shift) / (2 * h)) < 0.09)
    return np.where(mortar, 0.72, 1.0)


def _glossy(g: Grid, cell: float, peak: float) -> np.ndarray:
    """One soft highlight (height ``peak``) per ``cell`` x ``cell`` square."""
    dx, dy = frac(g.xx / cell) - 0.5, frac(g.yy / cell) - 0.5
    return peak * np.exp(-12.5 * (dx * dx + dy * dy))


def _veins(u: np.ndarray, v: np.ndarray, s: int, a: float, b: float) -> np.ndarray:
    """Meandering lines: near-zero set of a warped sine (periods a, b as fractions of s)."""
    return np.abs(np.sin(u / (a * s) + 2.5 * np.sin(v / (b * s)))) < 0.12


# Float gain (shape of g.xx) per material, from the grid and coordinates rotated by an angle.
_FIELDS: dict[str, Callable[[Grid, np.ndarray, np.ndarray], np.ndarray]] = {
    "metal": lambda g, u, v: np.where(frac(u / (0.6 * g.size)) > 0.93, 1.25,
                                      0.8 + 0.35 * frac(u / (0.6 * g.size))),  # brushed ramps
    "wood": lambda g, u, v: 1 + 0.13 * np.sin(  # wavy grain lines
        6.2832 * (u + 0.08 * g.size * np.sin(12.566 * v / g.size)) / (0.05 * g.size)),
    "fabric": lambda g, u, v: np.where(  # fine 2-pixel weave
        frac((np.floor(g.xx / 2) + np.floor(g.yy / 2)) / 2) < 0.25, 0.9, 1.1),
    "glass": lambda g, u, v: np.where(frac(u / (0.2 * g.size)) < 0.15, 1.3, 1.12),  # glints
    "plastic": lambda g, u, v: 0.95 + _glossy(g, 0.5 * g.size, 0.3),  # flat, soft highlights
    "stone": lambda g, u, v: 0.85 + 0.3 * _noise(g, 0),  # per-pixel speckle
    "brick": _brick,
    "foliage": lambda g, u, v: np.where(np.sin(u / (0.011 * g.size)) * np.sin(  # leafy blobs
        v / (0.008 * g.size) + 2 * np.sin(u / (0.0175 * g.size))) > 0, 1.15, 0.82),
    "leather": lambda g, u, v: np.where(_veins(u, v, g.size, 0.012, 0.02), 0.72, 0.95),  # creases
    "paper": lambda g, u, v: 1.12 + 0.06 * _noise(g, 1),  # bright, faint grain
    "ceramic": lambda g, u, v: np.where(_veins(u, v, g.size, 0.03, 0.05), 0.8,  # glaze, crackle
                                        1.0 + _glossy(g, 0.7 * g.size, 0.35)),
    "rubber": lambda g, u, v: np.where(  # dark matte with grip dots
        (frac(g.xx / (0.06 * g.size)) - 0.5) ** 2 + (frac(g.yy / (0.06 * g.size)) - 0.5) ** 2
        < 0.06, 0.9, 0.75),
    "marble": lambda g, u, v: np.where(_veins(u, v, g.size, 0.05, 0.09), 0.75, 1.15),  # veins
    "concrete": lambda g, u, v: 0.88 + 0.12 * _noise(g, 2) + 0.06 * np.sin(  # speckled blotches
        g.xx / (0.07 * g.size)) * np.sin(g.yy / (0.05 * g.size)),
    "tile": lambda g, u, v: np.where(  # square tiles with grout
        (frac(g.yy / max(4.0, 0.12 * g.size)) < 0.1)
        | (frac(g.xx / max(4.0, 0.12 * g.size)) < 0.1), 0.75, 1.08)}
_ORIENTED = ("metal", "wood", "glass", "foliage", "leather", "ceramic", "marble")
MATERIALS: tuple[str, ...] = tuple(_FIELDS)


@functools.lru_cache(maxsize=2)
def material_tiles(size: int) -> dict[str, np.ndarray]:
    """Return per material a ``(k, 2s, 2s)`` float32 stack of gain tiles (k orientations)."""
    yy, xx = np.mgrid[0:2 * size, 0:2 * size].astype(np.float32)
    g = Grid(size, yy, xx)
    angles = {n: (0.0, 0.785, 1.571, 2.356) for n in _ORIENTED}
    return {n: np.stack([np.broadcast_to(f(g, *g.rotated(a)), xx.shape)
                         for a in angles.get(n, (0.0,))]).astype(np.float32)
            for n, f in _FIELDS.items()}


def material_patch(name: str, rng: np.random.Generator, size: int, shape: tuple[int, int]
                   ) -> np.ndarray:
    """Return an (h, w) float32 gain window of a random orientation and place of a material."""
    tiles = material_tiles(size)[name]
    h, w = shape
    k, oy, ox = rng.integers(len(tiles)), rng.integers(2 * size - h + 1), rng.integers(
        2 * size - w + 1)
    return tiles[k, oy:oy + h, ox:ox + w]


def nearest(labels: np.ndarray, m: int) -> np.ndarray:
    """Subsample ``(s, s)`` labels to ``(m, m)`` taking the pixel nearest each mask cell centre."""
    s = labels.shape[0]
    if s % m == 0:
        return labels[s // m // 2::s // m, s // m // 2::s // m]
    idx = np.minimum(((np.arange(m) + 0.5) * s / m).astype(np.intp), s - 1)
    return labels[np.ix_(idx, idx)]



def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """Return one PNG chunk (length, tag, data, CRC)."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def label_png(labels: np.ndarray) -> bytes:
    """Encode ``(m, m)`` integer labels as an 8-bit RGB PNG with number = R + 256 * G."""
    h, w = labels.shape
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0, then R, G, B per pixel
    raw[:, 1::3], raw[:, 2::3] = labels & 255, labels >> 8
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def horizon_bands(rng: np.random.Generator, g: Grid, k: int) -> list[tuple[slice, np.ndarray]]:
    """Split the image into k bands by wavy horizon lines; top to bottom, (rows, (h, s) mask)."""
    s = g.size
    lines = [np.full(s, -1.0, np.float32)]  # (s,) top row of each band per column
    for h in np.sort(rng.uniform(0.25, 0.75, size=k - 1)) * s:
        amp, freq = rng.uniform(0, 0.06 * s), rng.uniform(1, 6) * np.pi / s
        lines.append(h + amp * np.sin(freq * g.xx[0] + rng.uniform(0, 7)))
    lines.append(np.full(s, s + 1.0, np.float32))
    bands = []
    for top, bottom in itertools.pairwise(lines):
        rows = slice(max(0, int(top.min())), min(s, int(bottom.max()) + 1))
        yy = g.yy[rows]
        bands.append((rows, (yy >= top[None, :]) & (yy < bottom[None, :])))
    return bands


def part_pair(first: str, g: Grid, shape: Shape, levels: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Return two (h, w) bool part masks of a drawn shape: rim/core, top/bottom or edge/center.

    ``first`` names the pair by its first part; ``g`` and ``levels`` (:meth:`Shape.levels`)
    cover the shape's window.
    """
    if first == "rim":
        return levels == 1, levels == 3
    body = (levels > 0) & (levels < HANDLE)
    if first == "top":
        top = g.yy < np.float32(shape.cy)
        return body & top, body & ~top
    dy, dx = g.yy - np.float32(shape.cy), g.xx - np.float32(shape.cx)
    near = dy * dy + dx * dx < np.float32(0.2 * shape.r) ** 2
    return outline(body, max(1, round(g.size / 75))), body & near


def decoration(name: str, rng: np.random.Generator, g: Grid, shape: Shape, levels: np.ndarray
               ) -> np.ndarray:
    """Return the (h, w) bool mask of a decoration (stripes, spots, band, notch) of a shape."""
    inner = (levels == 2) | (levels == 3)
    if name in ("stripes", "spots"):
        return inner & pattern_mask(name, rng, g, shape.r * rng.uniform(0.3, 0.5))
    u, v = g.rotated(rng.uniform(0, 2 * np.pi), shape.cy, shape.cx)
    if name == "band":
        return inner & (np.abs(v) < np.float32(0.18 * shape.r))
    body = (levels > 0) & (levels < HANDLE)  # notch: a wedge opening onto the outline
    return body & (u - np.float32(0.3 * shape.r) > 2 * np.abs(v))
