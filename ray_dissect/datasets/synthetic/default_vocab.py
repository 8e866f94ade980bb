"""The generator's default vocabulary: category and label names, their global numbers, the
drawing constants each name needs (scene layers, stuff colours, materials, part schemes,
palettes) and the colour naming of the colour layer (:func:`color_label_map`).

Label numbers do not change as the vocabulary grows: the 60 labels of the first vocabulary are
numbered 1..60, later labels after them, each group in category order (a name shared by two
categories is numbered once); each name list below gives the first vocabulary's labels first.
:mod:`generate` draws and writes images with these names; :mod:`broden_vocab` extends them.
"""

from __future__ import annotations

import numpy as np

CATEGORIES: tuple[str, ...] = ("color", "object", "part", "material", "scene", "texture")
COLOR_NAMES: tuple[str, ...] = ("black", "blue", "brown", "grey", "green", "orange", "pink",
                                "purple", "red", "white", "yellow")
COLOR_PROTOTYPES = np.array(  # (11, 3) RGB prototype per colour name, COLOR_NAMES order
    [(0, 0, 0), (40, 80, 200), (120, 70, 30), (128, 128, 128), (50, 160, 50), (240, 130, 30),
     (240, 150, 190), (130, 50, 160), (210, 30, 30), (250, 250, 250), (240, 220, 40)])
SCENE_LAYERS: dict[str, tuple[tuple[str, ...], ...]] = {  # top to bottom; options per layer
    "beach": (("sky",), ("water",), ("sand",)), "ocean": (("sky",), ("water",)),
    "desert": (("sky",), ("mountain",), ("sand",)),
    "forest": (("sky",), ("tree",), ("grass", "ground")),
    "field": (("sky",), ("mountain", "tree"), ("grass",)),
    "mountains": (("sky",), ("mountain",), ("ground", "grass")),
    "street": (("sky",), ("building",), ("road",)), "kitchen": (("wall",), ("floor",)),
    "bedroom": (("ceiling",), ("wall",), ("floor",)),
    "ski_slope": (("sky", "cloud"), ("mountain", "rock"), ("snow", "ice")),
    "glacier": (("sky", "cloud"), ("ice",), ("water", "snow")),
    "canyon": (("sky",), ("rock",), ("sand", "ground")),
    "lake": (("sky", "cloud"), ("tree", "mountain"), ("water", "ice")),
    "garden": (("sky",), ("fence", "bush"), ("grass",)),
    "park": (("sky", "cloud"), ("tree", "bush"), ("grass", "sidewalk")),
    "parking_lot": (("sky",), ("building", "fence"), ("road", "sidewalk")),
    "living_room": (("ceiling",), ("wall", "curtain", "window"), ("floor", "carpet")),
    "bathroom": (("ceiling",), ("wall", "curtain"), ("floor",)),
    "office": (("ceiling",), ("wall", "window"), ("carpet", "floor"))}
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
    "tree": ((30, 120, 30), (60, 140, 40)), "snow": ((245, 245, 250), (225, 232, 245)),
    "rock": ((115, 110, 105), (145, 135, 125), (120, 85, 60)),
    "fence": ((140, 95, 50), (200, 200, 200), (235, 235, 230)),
    "carpet": ((160, 40, 45), (70, 70, 150), (190, 140, 90), (120, 60, 140)),
    "cloud": ((225, 228, 235), (195, 200, 210)), "sidewalk": ((175, 175, 170), (195, 185, 170)),
    "bush": ((45, 115, 40), (75, 135, 50)), "ice": ((200, 225, 240), (170, 205, 235)),
    "curtain": ((170, 40, 70), (225, 205, 150), (90, 70, 140)),
    "window": ((175, 205, 235), (130, 170, 210))}
STUFF_NAMES, SCENE_NAMES = tuple(STUFF_COLORS), tuple(SCENE_LAYERS)
SHAPE_NAMES = ("circle", "square", "triangle", "ellipse", "star", "cross", "ring", "diamond",
               "hexagon", "pentagon", "octagon", "heart", "arrow", "crescent", "semicircle",
               "trapezoid", "rectangle", "teardrop", "chevron", "parallelogram")
PART_NAMES = ("rim", "core", "stripes", "spots",
              "handle", "top", "bottom", "edge", "center", "band", "notch")
MATERIAL_NAMES = ("metal", "wood", "fabric", "glass", "plastic", "stone", "brick", "foliage",
                  "leather", "paper", "ceramic", "rubber", "marble", "concrete", "tile")
TEXTURE_NAMES = ("stripes", "dotted", "checkered", "zigzagged", "grid", "wavy", "crosshatched",
                 "spiralled", "blotchy",  # "stripes" is deliberately also a part
                 "banded", "lined", "honeycombed", "scaly", "woven", "polka-dotted")
VOCABULARY: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES,
    "object": STUFF_NAMES[:12] + SHAPE_NAMES[:8] + STUFF_NAMES[12:] + SHAPE_NAMES[8:],
    "part": PART_NAMES, "material": MATERIAL_NAMES, "scene": SCENE_NAMES,
    "texture": TEXTURE_NAMES}
FIRST_VOCABULARY_SIZES: dict[str, int] = {  # labels per category numbered first (1..60)
    "color": 11, "object": 20, "part": 4, "material": 8, "scene": 9, "texture": 9}
INDEX_HEADER = ("image", "split", "ih", "iw", "sh", "sw", *CATEGORIES)
SOURCES = ("objects", "textures")
SOURCE_LAYERS: dict[str, tuple[str, ...]] = {  # per-pixel categories each source writes
    "objects": ("object", "part", "material"), "textures": (),
    "scenes": ("object", "part", "material"), "surfaces": ("material",)}
VOCABULARIES = ("default", "broden")
STUFF_MATERIALS: dict[str, tuple[str, ...]] = {
    "wall": ("brick", "stone", "plastic"), "floor": ("wood", "stone", "fabric"),
    "ground": ("stone",), "road": ("stone",), "building": ("brick", "glass", "stone", "metal"),
    "mountain": ("stone",), "tree": ("foliage",), "grass": ("foliage",), "rock": ("stone",),
    "fence": ("wood", "metal", "brick"), "carpet": ("fabric",), "bush": ("foliage",),
    "sidewalk": ("concrete", "tile", "brick"), "curtain": ("fabric",), "window": ("glass",)}
SHAPE_MATERIALS = ("metal", "wood", "fabric", "glass", "plastic", "stone", "leather", "paper",
                   "ceramic", "rubber", "marble", "concrete", "tile")
PART_SCHEMES = (("rim", "core"), ("top", "bottom"), ("edge", "center"))  # part layer 1 pairs
DECORATIONS = ("stripes", "spots", "band", "notch")  # part layer 2, painted another colour
PART_GAINS = {"rim": 0.8, "core": 1.15, "top": 1.12, "bottom": 0.85, "edge": 0.6, "center": 1.3,
              "handle": 0.85}
PALETTE = np.array(  # saturated shape/texture colours; red, green, blue, yellow most common
    [(225, 30, 30), (40, 175, 45), (35, 70, 215), (245, 220, 35), (245, 135, 25), (135, 50, 165),
     (245, 150, 190), (125, 75, 35), (245, 245, 245), (25, 25, 25)], dtype=np.float32)
PALETTE_WEIGHTS = np.array([24, 17, 17, 14, 6, 6, 5, 4, 4, 3], dtype=np.float64) / 100.0


def _number_labels() -> dict[str, int]:
    """Assign global numbers 1..L: first vocabulary, then later labels, each in category order."""
    numbers: dict[str, int] = {}
    for later in (False, True):
        for cat in CATEGORIES:
            cut = FIRST_VOCABULARY_SIZES[cat]
            for name in VOCABULARY[cat][cut:] if later else VOCABULARY[cat][:cut]:
                numbers.setdefault(name, len(numbers) + 1)
    return numbers


LABEL_NUMBERS: dict[str, int] = _number_labels()
COLOR_NUMBERS = np.array([LABEL_NUMBERS[n] for n in COLOR_NAMES], dtype=np.uint16)
# Packed key 16 * (|c|^2 - 2 p.c + 4e5) + k: exact in float32 (< 2^24), its min gives argmin.
_KEY_W = (-32.0 * COLOR_PROTOTYPES).astype(np.float32)
_KEY_B = (16 * ((COLOR_PROTOTYPES**2).sum(1) + 400_000) + np.arange(11)).astype(np.float32)


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

