"""Deterministic procedural generator of a concept dataset in the Broden on-disk format.

The tree mirrors Broden (``index.csv``, ``label.csv``, ``category.csv``, ``c_<category>.csv``,
``images/<source>/...``) so one reader handles real and synthetic data. Two sources are drawn:
``objects`` (wavy "stuff" background regions plus 1-4 foreground shapes with parts and
materials, a whole-image scene label, sometimes a texture label) and ``textures`` (a dtd-like
whole-image pattern with one or two texture labels). Every image gets a colour layer computed
like Broden's: the written JPEG is decoded, area-averaged to ``mask_size`` (``Image.reduce``
when ``image_size`` is a multiple of ``mask_size``, else a BOX resize) and each pixel is named
by :func:`color_label_map`. Image ``i`` depends only on ``(seed, i)``; same arguments give
byte-identical files.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = ("color", "object", "part", "material", "scene", "texture")
COLOR_NAMES: tuple[str, ...] = ("black", "blue", "brown", "grey", "green", "orange", "pink",
                                "purple", "red", "white", "yellow")
COLOR_PROTOTYPES = np.array(  # (11, 3) RGB prototype per colour name, COLOR_NAMES order
    [(0, 0, 0), (40, 80, 200), (120, 70, 30), (128, 128, 128), (50, 160, 50), (240, 130, 30),
     (240, 150, 190), (130, 50, 160), (210, 30, 30), (250, 250, 250), (240, 220, 40)])
STUFF_NAMES = ("sky", "wall", "ceiling", "floor", "ground", "grass", "sand", "water", "road",
               "building", "mountain", "tree")
SHAPE_NAMES = ("circle", "square", "triangle", "ellipse", "star", "cross", "ring", "diamond")
PART_NAMES = ("rim", "core", "stripes", "spots")
MATERIAL_NAMES = ("metal", "wood", "fabric", "glass", "plastic", "stone", "brick", "foliage")
SCENE_NAMES = ("beach", "ocean", "desert", "forest", "field", "mountains", "street", "kitchen",
               "bedroom")
TEXTURE_NAMES = ("stripes", "dotted", "checkered", "zigzagged", "grid", "wavy", "crosshatched",
                 "spiralled", "blotchy")  # "stripes" is deliberately also a part
VOCABULARY: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES, "object": STUFF_NAMES + SHAPE_NAMES, "part": PART_NAMES,
    "material": MATERIAL_NAMES, "scene": SCENE_NAMES, "texture": TEXTURE_NAMES}
INDEX_HEADER = ("image", "split", "ih", "iw", "sh", "sw", *CATEGORIES)
SOURCES = ("objects", "textures")
SCENE_LAYERS: dict[str, tuple[tuple[str, ...], ...]] = {  # top to bottom; options per layer
    "beach": (("sky",), ("water",), ("sand",)), "ocean": (("sky",), ("water",)),
    "desert": (("sky",), ("mountain",), ("sand",)),
    "forest": (("sky",), ("tree",), ("grass", "ground")),
    "field": (("sky",), ("mountain", "tree"), ("grass",)),
    "mountains": (("sky",), ("mountain",), ("ground", "grass")),
    "street": (("sky",), ("building",), ("road",)), "kitchen": (("wall",), ("floor",)),
    "bedroom": (("ceiling",), ("wall",), ("floor",))}
STUFF_COLORS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "sky": ((70, 130, 220), (90, 150, 235), (205, 205, 210)),
    "wall": ((235, 235, 230), (240, 215, 70), (240, 160, 190), (140, 140, 140)),
    "ceiling": ((245, 245, 245), (200, 200, 200)),
    "floor": ((130, 80, 35), (120, 120, 120), (190, 60, 40)),
    "ground": ((120, 75, 35), (105, 95, 75)), "grass": ((50, 160, 50), (80, 170, 40)),
    "sand": ((235, 210, 120), (240, 185, 90)), "water": ((30, 80, 200), (40, 110, 180)),
    "road": ((95, 95, 95), (45, 45, 45)),
    "building": ((150, 150, 150), (185, 70, 50), (130, 80, 40)),
    "mountain": ((120, 80, 50), (110, 110, 120), (120, 60, 150)),
    "tree": ((30, 120, 30), (60, 140, 40))}
STUFF_MATERIALS: dict[str, tuple[str, ...]] = {
    "wall": ("brick", "stone", "plastic"), "floor": ("wood", "stone", "fabric"),
    "ground": ("stone",), "road": ("stone",), "building": ("brick", "glass", "stone", "metal"),
    "mountain": ("stone",), "tree": ("foliage",), "grass": ("foliage",)}
SHAPE_MATERIALS = ("metal", "wood", "fabric", "glass", "plastic", "stone")
PALETTE = np.array(  # saturated shape/texture colours; red, green, blue, yellow most common
    [(225, 30, 30), (40, 175, 45), (35, 70, 215), (245, 220, 35), (245, 135, 25), (135, 50, 165),
     (245, 150, 190), (125, 75, 35), (245, 245, 245), (25, 25, 25)], dtype=np.float32)
PALETTE_WEIGHTS = np.array([24, 17, 17, 14, 6, 6, 5, 4, 4, 3], dtype=np.float64) / 100.0


def _number_labels() -> dict[str, int]:
    """Assign global numbers 1..L in fixed vocabulary order (a shared name is numbered once)."""
    numbers: dict[str, int] = {}
    for cat in CATEGORIES:
        for name in VOCABULARY[cat]:
            numbers.setdefault(name, len(numbers) + 1)
    return numbers


LABEL_NUMBERS: dict[str, int] = _number_labels()
_COLOR_NUMBERS = np.array([LABEL_NUMBERS[n] for n in COLOR_NAMES], dtype=np.uint16)
# Packed key 16 * (|c|^2 - 2 p.c + 4e5) + k: exact in float32 (< 2^24), its min gives argmin.
_KEY_W = (-32.0 * COLOR_PROTOTYPES).astype(np.float32)
_KEY_B = (16 * ((COLOR_PROTOTYPES**2).sum(1) + 400_000) + np.arange(11)).astype(np.float32)
_ANG = np.linspace(0, 2 * np.pi, 48, endpoint=False)
_W = 0.33
_OUTLINES: dict[str, np.ndarray] = {  # (k, 2) unit polygon vertices (x, y)
    "circle": np.stack([np.cos(_ANG), np.sin(_ANG)], 1),
    "triangle": np.array([(np.cos(a), np.sin(a)) for a in np.pi / 2 + np.arange(3) * 2.0944]),
    "square": np.array([(0.75, 0.75), (-0.75, 0.75), (-0.75, -0.75), (0.75, -0.75)]),
    "diamond": np.array([(1.0, 0.0), (0.0, 0.6), (-1.0, 0.0), (0.0, -0.6)]),
    "star": np.array([(r * np.cos(a), r * np.sin(a)) for r, a in
                      zip([1.0, 0.45] * 5, np.pi / 2 + np.arange(10) * np.pi / 5, strict=True)]),
    "cross": np.array([(_W, 1), (_W, _W), (1, _W), (1, -_W), (_W, -_W), (_W, -1), (-_W, -1),
                       (-_W, -_W), (-1, -_W), (-1, _W), (-_W, _W), (-_W, 1)], dtype=np.float64)}
# Boolean two-colour patterns of float32 coordinates t, w measured in periods.
_PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "stripes": lambda t, w: _frac(t) < 0.5,
    "dotted": lambda t, w: (_frac(t) - 0.5) ** 2 + (_frac(w) - 0.5) ** 2 < 0.09,
    "checkered": lambda t, w: _frac((np.floor(t) + np.floor(w)) / 2) < 0.25,
    "zigzagged": lambda t, w: _frac(w + np.abs(_frac(t) - 0.5)) < 0.5,
    "grid": lambda t, w: (_frac(t) < 0.2) | (_frac(w) < 0.2),
    "wavy": lambda t, w: _frac(w + 0.3 * np.sin(np.pi * t)) < 0.5,
    "crosshatched": lambda t, w: (_frac(t + w) < 0.2) | (_frac(t - w) < 0.2),
    "spiralled": lambda t, w: np.sin(6.2832 * np.hypot(t, w) + 3 * np.arctan2(w, t)) > 0,
    "blotchy": lambda t, w: np.sin(2.1 * t) + np.sin(1.7 * w + np.sin(t)) > 0.5}
_PATTERNS["spots"] = _PATTERNS["dotted"]
Window = tuple[slice, slice]


def _frac(a: np.ndarray) -> np.ndarray:
    """Return ``a - floor(a)`` (same shape; much faster than float ``%`` in numpy)."""
    return a - np.floor(a)


def _paint(base: np.ndarray, mask: np.ndarray, rgb: np.ndarray) -> None:
    """Set ``base`` ((3, h, w) float32) to colour ``rgb`` ((3,)) where ``mask`` ((h, w) bool)."""
    for c in range(3):
        base[c][mask] = rgb[c]


def color_label_map(rgb: np.ndarray) -> np.ndarray:
    """Name each pixel's colour by its nearest prototype (Euclidean RGB, ties to lower index).

    Args:
        rgb: ``(h, w, 3)`` uint8 RGB image.

    Returns:
        ``(h, w)`` int64 array of indices into ``COLOR_NAMES``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) RGB array, got shape {rgb.shape}")
    px = rgb.reshape(-1, 3).astype(np.float32)
    key = (_KEY_W @ px.T + _KEY_B[:, None]).min(axis=0)
    return (key.astype(np.int64) & 15).reshape(rgb.shape[:2])


@dataclass(frozen=True)
class _Grid:
    """Pixel coordinates (``yy``, ``xx``: float32, full image or a window) of an s x s image."""

    size: int
    yy: np.ndarray
    xx: np.ndarray

    @classmethod
    def make(cls, size: int) -> _Grid:
        """Return the full ``(size, size)`` grid."""
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        return cls(size, yy, xx)

    def crop(self, win: Window) -> _Grid:
        """Return the grid restricted to window ``win`` (same image size)."""
        return _Grid(self.size, self.yy[win], self.xx[win])

    def rotated(self, theta: float, cy: float = 0.0, cx: float = 0.0) -> tuple[np.ndarray, ...]:
        """Return ``(u, v)``: float32 coordinates (shape of ``xx``) rotated about (cy, cx)."""
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        x, y = self.xx - np.float32(cx), self.yy - np.float32(cy)
        return x * c + y * s, y * c - x * s


@dataclass(frozen=True)
class _Canvas:
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
    def new(cls, s: int) -> _Canvas:
        """Return a blank s x s canvas (black, gain 1, no labels)."""
        z = [np.zeros((s, s), np.uint16) for _ in range(4)]
        return cls(np.zeros((3, s, s), np.float32), np.ones((s, s), np.float32), *z)

    def view(self, win: Window) -> _Canvas:
        """Return a canvas of views onto the window ``win``."""
        maps = (self.gain, self.obj, self.mat, self.part1, self.part2)
        return _Canvas(self.base[:, win[0], win[1]], *(a[win] for a in maps))

    def rgb(self) -> np.ndarray:
        """Return the shaded image as ``(h, w, 3)`` uint8."""
        out = self.base * self.gain
        out += 0.5
        return np.dstack(np.clip(out, 0, 255, out=out).astype(np.uint8))


def _pick_color(rng: np.random.Generator, options: Sequence | np.ndarray, jitter: int = 12
                ) -> np.ndarray:
    """Return a ``(3,)`` float32 colour: a random option plus per-channel jitter."""
    base = np.asarray(options[rng.integers(len(options))], dtype=np.float32)
    return base + rng.integers(-jitter, jitter + 1, size=3).astype(np.float32)


def _material_field(name: str, g: _Grid, theta: float) -> np.ndarray:
    """Return a float32 brightness factor (shape of ``g.xx``) drawing the material's look."""
    s = g.size
    u, v = g.rotated(theta)
    if name == "metal":  # brushed ramps with specular bands
        phase = _frac(u / (0.6 * s))
        return np.where(phase > 0.93, 1.25, 0.8 + 0.35 * phase)
    if name == "wood":  # wavy grain lines
        return 1 + 0.13 * np.sin(6.2832 * (u + 0.08 * s * np.sin(12.566 * v / s)) / (0.05 * s))
    if name == "fabric":  # fine 2-pixel weave
        return np.where(_frac((np.floor(g.xx / 2) + np.floor(g.yy / 2)) / 2) < 0.25, 0.9, 1.1)
    if name == "glass":  # bright with parallel glints
        return np.where(_frac(u / (0.2 * s)) < 0.15, 1.3, 1.12)
    if name == "plastic":  # flat with soft glossy highlights
        dx, dy = _frac(g.xx / (0.5 * s)) - 0.5, _frac(g.yy / (0.5 * s)) - 0.5
        return 0.95 + 0.3 * np.exp(-12.5 * (dx * dx + dy * dy))
    if name == "stone":  # per-pixel speckle (fixed noise; placement varies per use)
        return 0.85 + 0.3 * np.random.default_rng(0).random(g.xx.shape, dtype=np.float32)
    if name == "brick":  # mortar lines in a running bond
        h = max(3.0, 0.07 * s)
        shift = 2 * h * _frac(np.floor(g.yy / h) / 2)  # odd rows shifted by half a brick
        mortar = (_frac(g.yy / h) < 0.18) | (_frac((g.xx + shift) / (2 * h)) < 0.09)
        return np.where(mortar, 0.72, 1.0)
    leaves = np.sin(u / (0.011 * s)) * np.sin(v / (0.008 * s) + 2 * np.sin(u / (0.0175 * s)))
    return np.where(leaves > 0, 1.15, 0.82)  # foliage: leafy blobs


@functools.lru_cache(maxsize=2)
def _material_tiles(size: int) -> dict[str, np.ndarray]:
    """Return per material a ``(k, 2s, 2s)`` float32 stack of gain tiles (k orientations)."""
    yy, xx = np.mgrid[0:2 * size, 0:2 * size].astype(np.float32)
    g = _Grid(size, yy, xx)
    angles = {n: (0.0, 0.785, 1.571, 2.356) for n in ("metal", "wood", "glass", "foliage")}
    return {n: np.stack([_material_field(n, g, a) for a in angles.get(n, (0.0,))]).astype(
        np.float32) for n in MATERIAL_NAMES}


def _apply_material(name: str, rng: np.random.Generator, size: int, cv: _Canvas,
                    mask: np.ndarray) -> None:
    """Label ``mask`` ((h, w) bool, a window of an s x s image) as material ``name``.

    The gain there is copied from a randomly oriented and placed precomputed material tile.
    """
    tiles = _material_tiles(size)[name]
    h, w = mask.shape
    k, oy, ox = rng.integers(len(tiles)), rng.integers(2 * size - h + 1), rng.integers(
        2 * size - w + 1)
    cv.mat[mask] = LABEL_NUMBERS[name]
    cv.gain[mask] = tiles[k, oy:oy + h, ox:ox + w][mask]


def _pattern_mask(name: str, rng: np.random.Generator, g: _Grid, period: float) -> np.ndarray:
    """Return a bool pattern (shape of ``g.xx``) with random orientation and origin."""
    cy, cx = rng.uniform(0, g.size, size=2)
    u, v = g.rotated(rng.uniform(0, np.pi), cy, cx)
    p = np.float32(max(period, 3.0))
    return _PATTERNS[name](u / p, v / p)


def _draw_background(rng: np.random.Generator, g: _Grid, scene: str, cv: _Canvas) -> None:
    """Fill ``cv`` with 1-3 stuff regions of ``scene`` separated by wavy horizon lines."""
    s, layers = g.size, SCENE_LAYERS[scene]
    k = int(rng.integers(1, len(layers) + 1))
    chosen = np.sort(rng.choice(len(layers), size=k, replace=False))
    lines = [np.full(s, -1.0, np.float32)]  # (s,) top row of each region per column
    for h in np.sort(rng.uniform(0.25, 0.75, size=k - 1)) * s:
        amp, freq = rng.uniform(0, 0.06 * s), rng.uniform(1, 6) * np.pi / s
        lines.append(h + amp * np.sin(freq * g.xx[0] + rng.uniform(0, 7)))
    lines.append(np.full(s, s + 1.0, np.float32))
    for j, layer in enumerate(chosen):
        rows = slice(max(0, int(lines[j].min())), min(s, int(lines[j + 1].max()) + 1))
        sub, yy = cv.view((rows, slice(None))), g.yy[rows]
        m = (yy >= lines[j][None, :]) & (yy < lines[j + 1][None, :])
        name = layers[layer][rng.integers(len(layers[layer]))]
        _paint(sub.base, m, _pick_color(rng, STUFF_COLORS[name]))
        sub.obj[m] = LABEL_NUMBERS[name]
        materials = STUFF_MATERIALS.get(name, ())
        if materials and rng.random() < 0.6:
            _apply_material(materials[rng.integers(len(materials))], rng, s, sub, m)


@dataclass(frozen=True)
class _Shape:
    """Geometry of a foreground shape (pixels; angle in radians; aspect for ellipses)."""

    kind: str
    cy: float
    cx: float
    r: float
    angle: float
    aspect: float

    def window(self, s: int) -> Window:
        """Return the bounding window of the shape clipped to an s x s image."""
        e = 1.1 * self.r
        return (slice(max(0, int(self.cy - e)), min(s, int(self.cy + e) + 2)),
                slice(max(0, int(self.cx - e)), min(s, int(self.cx + e) + 2)))

    def levels(self, win: Window) -> np.ndarray:
        """Return window-shaped uint8 nesting levels of the shape scaled about its centre.

        0 = outside, 1 = shape, 2 = inside the 0.72-scaled shape, 3 = inside the 0.45-scaled one.
        """
        pts = _OUTLINES["circle" if self.kind in ("ellipse", "ring") else self.kind] * self.r
        pts = pts * ([1.0, self.aspect] if self.kind == "ellipse" else 1.0)
        c, s = np.cos(self.angle), np.sin(self.angle)
        centre = np.array([self.cx - win[1].start, self.cy - win[0].start])
        xy = centre + np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], 1)
        im = Image.new("L", (win[1].stop - win[1].start, win[0].stop - win[0].start))
        pen = ImageDraw.Draw(im)
        steps = [(1, 1.0), (2, 0.72), (3, 0.45)] + ([(0, 0.55)] if self.kind == "ring" else [])
        for level, scale in steps:  # nested scaled copies; a ring's hole is punched last
            pen.polygon((centre + scale * (xy - centre)).ravel().tolist(), fill=level)
        return np.asarray(im)


def _draw_parts(rng: np.random.Generator, g: _Grid, shape: _Shape, cv: _Canvas,
                levels: np.ndarray, color_idx: int) -> None:
    """Draw rim/core (part layer 1) and stripes/spots (layer 2) of a just-drawn shape.

    ``levels`` is the (h, w) uint8 output of :meth:`_Shape.levels` on the window of ``cv``.
    """
    if rng.random() < 0.6:
        rim, core = levels == 1, levels == 3
        cv.part1[rim], cv.part1[core] = LABEL_NUMBERS["rim"], LABEL_NUMBERS["core"]
        cv.gain[rim] *= 0.8
        cv.gain[core] *= 1.15
    if rng.random() < 0.4:
        name = ("stripes", "spots")[rng.integers(2)]
        deco = (levels >= 2) & _pattern_mask(name, rng, g, shape.r * rng.uniform(0.3, 0.5))
        cv.part2[deco] = LABEL_NUMBERS[name]
        _paint(cv.base, deco, PALETTE[(color_idx + rng.integers(1, len(PALETTE))) % len(PALETTE)])


def _draw_shape(rng: np.random.Generator, g: _Grid, cv: _Canvas) -> None:
    """Draw one random foreground shape (occluding earlier ones) with material and parts."""
    s = g.size
    cy, cx = rng.uniform(0.15 * s, 0.85 * s, size=2)
    shape = _Shape(SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))], float(cy), float(cx),
                   rng.uniform(0.12, 0.3) * s, rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.75))
    win = shape.window(s)
    sub, levels = cv.view(win), shape.levels(win)
    m = levels > 0
    color_idx = int(rng.choice(len(PALETTE), p=PALETTE_WEIGHTS))
    _paint(sub.base, m, _pick_color(rng, PALETTE[color_idx:color_idx + 1], jitter=15))
    sub.gain[m], sub.obj[m] = 1.0, LABEL_NUMBERS[shape.kind]
    sub.mat[m], sub.part1[m], sub.part2[m] = 0, 0, 0
    if rng.random() < 0.5:
        _apply_material(SHAPE_MATERIALS[rng.integers(len(SHAPE_MATERIALS))], rng, s, sub, m)
    _draw_parts(rng, g.crop(win), shape, sub, levels, color_idx)


def _render_objects(rng: np.random.Generator, g: _Grid) -> tuple[_Canvas, dict[str, list[int]]]:
    """Render a scene image; return its canvas and whole-image labels (scene, texture)."""
    scene = SCENE_NAMES[rng.integers(len(SCENE_NAMES))]
    cv = _Canvas.new(g.size)
    _draw_background(rng, g, scene, cv)
    whole = {"scene": [LABEL_NUMBERS[scene]], "texture": []}
    if rng.random() < 0.15:  # patterned background, labelled as a whole-image texture
        name = TEXTURE_NAMES[rng.integers(len(TEXTURE_NAMES))]
        cv.gain[_pattern_mask(name, rng, g, g.size * rng.uniform(0.05, 0.1))] *= 0.7
        whole["texture"].append(LABEL_NUMBERS[name])
    for _ in range(rng.integers(1, 5)):
        _draw_shape(rng, g, cv)
    return cv, whole


def _render_texture(rng: np.random.Generator, g: _Grid) -> tuple[_Canvas, dict[str, list[int]]]:
    """Render a dtd-like texture image; return its canvas and its 1-2 texture labels."""
    k = 1 if rng.random() < 0.7 else 2
    chosen = rng.choice(len(TEXTURE_NAMES), size=k, replace=False)
    colors = rng.choice(len(PALETTE), size=k + 1, replace=False, p=PALETTE_WEIGHTS)
    cv = _Canvas.new(g.size)
    cv.base[:] = PALETTE[colors[0]][:, None, None]
    for j, t in enumerate(chosen):
        period = g.size * (rng.uniform(0.05, 0.12) if j == 0 else rng.uniform(0.15, 0.3))
        _paint(cv.base, _pattern_mask(TEXTURE_NAMES[t], rng, g, period), PALETTE[colors[j + 1]])
    cv.base[:] += rng.integers(-10, 11, size=3).astype(np.float32)[:, None, None]
    return cv, {"texture": sorted(LABEL_NUMBERS[TEXTURE_NAMES[t]] for t in chosen)}


class _Stats:
    """Per-label image counts and coverage sums, per category and overall (key ``"any"``)."""

    def __init__(self, n_labels: int) -> None:
        self.n = n_labels + 1
        self.count = {c: np.zeros(self.n, np.int64) for c in (*CATEGORIES, "any")}
        self.cover = {c: np.zeros(self.n, np.float64) for c in (*CATEGORIES, "any")}
        self.images = dict.fromkeys(CATEGORIES, 0)

    def add(self, layers: dict[str, list[np.ndarray]], whole: dict[str, list[int]]) -> None:
        """Add one image: per-category ``(m, m)`` label maps and whole-image label numbers."""
        union = np.zeros(self.n, np.float64)
        for cat in CATEGORIES:
            if not layers.get(cat) and not whole.get(cat):
                continue
            cov = np.zeros(self.n, np.float64)
            for lab in layers.get(cat, []):
                cov += np.bincount(lab.ravel(), minlength=self.n)[: self.n] / lab.size
            cov[whole.get(cat, [])] = 1.0
            cov[0] = 0.0
            cov = np.minimum(cov, 1.0)
            self.count[cat] += cov > 0
            self.cover[cat] += cov
            self.images[cat] += bool(cov.any())
            union = np.maximum(union, cov)  # exact: a label is per-pixel in one category at most
        self.count["any"] += union > 0
        self.cover["any"] += union

    def mean_cover(self, key: str, number: int) -> float:
        """Mean coverage of label ``number`` over the images where it occurs (0 if none)."""
        n = self.count[key][number]
        return float(self.cover[key][number] / n) if n else 0.0


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    """Return one PNG chunk (length, tag, data, CRC)."""
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _save_label_png(path: Path, labels: np.ndarray) -> None:
    """Save ``(m, m)`` integer labels as an 8-bit RGB PNG with number = R + 256 * G."""
    h, w = labels.shape
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0, then R, G, B per pixel
    raw[:, 1::3], raw[:, 2::3] = labels & 255, labels >> 8
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + idat
                     + _png_chunk(b"IEND", b""))


def _color_layer(jpeg: bytes, mask_size: int) -> np.ndarray:
    """Decode ``jpeg``, area-average it to mask_size and return ``(m, m)`` uint16 colour labels."""
    im = Image.open(io.BytesIO(jpeg))
    im = im.convert("RGB") if im.mode != "RGB" else im
    if im.width % mask_size == 0:
        im = im.reduce(im.width // mask_size)
    else:
        im = im.resize((mask_size, mask_size), Image.Resampling.BOX)
    return _COLOR_NUMBERS[color_label_map(np.asarray(im))]


def _nearest(labels: np.ndarray, m: int) -> np.ndarray:
    """Subsample ``(s, s)`` labels to ``(m, m)`` taking the pixel nearest each mask cell centre."""
    s = labels.shape[0]
    if s % m == 0:
        return labels[s // m // 2::s // m, s // m // 2::s // m]
    idx = np.minimum(((np.arange(m) + 0.5) * s / m).astype(np.intp), s - 1)
    return labels[np.ix_(idx, idx)]


def _write_sample(root: Path, index: int, split: str, source: str, cv: _Canvas,
                  whole: dict[str, list[int]], mask_size: int, stats: _Stats) -> list[str]:
    """Write the JPEG and label PNGs of one image; return its ``index.csv`` row."""
    s = cv.gain.shape[0]
    stem = f"{source}/{source[:3]}_{index:06d}"
    buf = io.BytesIO()
    Image.fromarray(cv.rgb()).save(buf, format="JPEG", quality=95)
    (root / "images" / f"{stem}.jpg").write_bytes(buf.getvalue())
    layers = {"color": [_color_layer(buf.getvalue(), mask_size)]}
    if source == "objects":
        for cat, maps in (("object", [cv.obj]), ("part", [cv.part1, cv.part2]),
                          ("material", [cv.mat])):
            layers[cat] = [a for a in (_nearest(m, mask_size) for m in maps) if a.any()]
    cells = {cat: ";".join(map(str, nums)) for cat, nums in whole.items()}
    for cat, maps in layers.items():
        names = [f"{stem}_{f'part_{k}' if cat == 'part' else cat}.png"
                 for k in range(1, len(maps) + 1)]
        for name, lab in zip(names, maps, strict=True):
            _save_label_png(root / "images" / name, lab)
        cells[cat] = ";".join(names)
    stats.add(layers, whole)
    return [f"{stem}.jpg", split, str(s), str(s), str(mask_size), str(mask_size),
            *(cells.get(c, "") for c in CATEGORIES)]


def _write_csv(path: Path, header: Sequence[str], rows: list[list]) -> None:
    """Write a CSV file (header row, then rows) with LF line endings."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, rows: list[list[str]], stats: _Stats) -> None:
    """Write ``index.csv``, ``label.csv``, ``category.csv`` and the ``c_*.csv`` files."""
    _write_csv(root / "index.csv", INDEX_HEADER, rows)
    labels = []
    for name, num in LABEL_NUMBERS.items():
        cats = ";".join(f"{c}({stats.count[c][num]})" for c in CATEGORIES if name in VOCABULARY[c])
        labels.append([num, name, cats, stats.count["any"][num],
                       f"{stats.mean_cover('any', num):.6f}", ""])
    _write_csv(root / "label.csv", ("number", "name", "category", "frequency", "coverage", "syns"),
               labels)
    cat_rows = [[c, 1, len(VOCABULARY[c]), len(VOCABULARY[c]), stats.images[c]] for c in CATEGORIES]
    _write_csv(root / "category.csv", ("name", "first", "last", "count", "frequency"), cat_rows)
    for cat in CATEGORIES:
        nums = [LABEL_NUMBERS[n] for n in VOCABULARY[cat]]
        codes = [[code, num, name, stats.count[cat][num],
                  f"{stats.mean_cover(cat, num):.6f}"]
                 for code, (num, name) in enumerate(zip(nums, VOCABULARY[cat], strict=True), 1)]
        header = ("code", "number", "name", "frequency", "coverage")
        _write_csv(root / f"c_{cat}.csv", header, codes)


def _prepare_root(root: Path) -> None:
    """Create ``root`` and its image folders; refuse a file or a non-empty directory."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"dataset root {root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"dataset root {root} is not empty; refusing to overwrite it")
    for source in SOURCES:
        (root / "images" / source).mkdir(parents=True, exist_ok=True)


def generate_dataset(root: Path | str, n_images: int, seed: int = 0, *, image_size: int = 224,
                     mask_size: int = 112) -> Path:
    """Write a Broden-format dataset of n_images to root (created; must be empty or absent).

    Args:
        root: Output directory; created if absent, must be empty if present.
        n_images: Number of images (about 80% ``objects``, 20% ``textures``).
        seed: Non-negative seed; image ``i`` uses ``np.random.default_rng([seed, i])``.
        image_size: Side of the square RGB JPEG images (``ih = iw``), at least 16.
        mask_size: Side of the square label PNGs (``sh = sw``), at least 1.

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: If root is a file or a non-empty directory, or an argument is invalid.
    """
    if n_images < 0 or seed < 0 or image_size < 16 or mask_size < 1:
        raise ValueError("need n_images >= 0, seed >= 0, image_size >= 16 and mask_size >= 1")
    root = Path(root)
    _prepare_root(root)
    grid, stats, rows = _Grid.make(image_size), _Stats(len(LABEL_NUMBERS)), []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        split = "train" if rng.random() < 0.7 else "val"
        source = "objects" if rng.random() < 0.8 else "textures"
        render = _render_objects if source == "objects" else _render_texture
        rows.append(_write_sample(root, i, split, source, *render(rng, grid), mask_size, stats))
        if (i + 1) % 1000 == 0:
            logger.debug("generated %d/%d images", i + 1, n_images)
    _write_tables(root, rows, stats)
    n_tex = sum(r[0].startswith("textures/") for r in rows)
    n_train = sum(r[1] == "train" for r in rows)
    (root / "README.txt").write_text(
        "Synthetic Broden-format concept dataset generated by ray_dissect.generate.\n"
        f"seed: {seed}\nimages: {n_images} (objects: {n_images - n_tex}, textures: {n_tex}; "
        f"train: {n_train}, val: {n_images - n_train})\n"
        f"image_size: {image_size}, mask_size: {mask_size}\n"
        f"labels: {len(LABEL_NUMBERS)} in categories {', '.join(CATEGORIES)}\n"
        "Procedurally drawn shapes, stuff regions and patterns; no external data.\n",
        encoding="utf-8")
    logger.info("wrote %d images (%d textures) with seed %d to %s", n_images, n_tex, seed, root)
    return root
