"""A Broden-shaped vocabulary for the generator: 1,197 concepts in Broden's category sizes.

Broden (algorithms.md section 1) has scene 468, object 584, part 234, material 32, texture 47
and color 11 labels, 1,376 category entries over 1,197 unique names: a name can sit in several
categories. This vocabulary has exactly those counts and overlaps:

- 160 part names are also object names (a *door* is an object and a part of a car), 12
  material names are objects (*carpet*, *sky*, *water*), 7 part names are textures
  (*stripes*, *banded*); 1,376 - 179 = 1,197 unique labels.
- Objects are *stuff* (110: background regions, drawn in horizontal bands) and *things* (474:
  drawn shapes). Every thing has a fixed list of 0-4 parts, each with a fixed geometry (a
  region pair of :func:`drawing.part_pair`, a decoration, the handle), so a part is always
  drawn inside its object; parts are shared across things with Zipf-like popularity.
- Every scene has 1-3 stuff layers and a fixed list of candidate things; scenes and things
  are drawn with Zipf-like frequencies, as in ADE20K, so label combinations have a long tail.
- Materials and textures map onto the 15 drawable materials and patterns of :mod:`drawing`.

The vocabulary is a pure function of the constants below (fixed seed), independent of the
dataset seed, so label numbers are stable across generated datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from ray_dissect.datasets.synthetic import default_vocab
from ray_dissect.datasets.synthetic import drawing as dr
from ray_dissect.datasets.synthetic.default_vocab import (
    COLOR_NAMES,
    PALETTE,
    SCENE_LAYERS,
    SCENE_NAMES,
    SHAPE_NAMES,
    STUFF_NAMES,
)

CATEGORY_SIZES: dict[str, int] = {"color": 11, "object": 584, "part": 234, "material": 32,
                                  "scene": 468, "texture": 47}
N_STUFF, N_PART_OBJECT, N_PART_TEXTURE = 110, 160, 7
BASE_STUFF, BASE_SHAPES, BASE_SCENES = STUFF_NAMES, SHAPE_NAMES, SCENE_NAMES
BASE_PARTS = ("rim", "core", "stripes", "spots", "handle", "top", "bottom", "edge", "center",
              "band", "notch", "dotted", "grid", "lined", "woven", "scaly", "banded")
DRAWN_MATERIALS = dr.MATERIALS  # the 15 material fields drawing.py can shade
OBJECT_MATERIALS = ("carpet", "sky", "water", "ice", "snow", "sand", "grass", "rock",
                    "curtain", "window", "wall", "floor")
MATERIAL_NAMES = (*DRAWN_MATERIALS, *OBJECT_MATERIALS, "food", "fur", "hair", "mirror", "skin")
TEXTURE_NAMES = (*default_vocab.TEXTURE_NAMES, "braided", "bubbly", "bumpy", "cobwebbed", "cracked",
                 "crystalline", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grooved",
                 "interlaced", "knitted", "lacelike", "marbled", "matted", "meshed", "paisley",
                 "perforated", "pitted", "pleated", "porous", "potholed", "smeared",
                 "sprinkled", "stained", "stratified", "studded", "swirly", "veined", "waffled")
DRAWN_PATTERNS = tuple(p for p in dr.PATTERNS if p != "spots")  # 15 drawable patterns
PAIR_SCHEMES = ("rim", "top", "edge")  # drawing.part_pair's three region pairs
DECORATIONS = ("stripes", "spots", "band", "notch")  # drawing.decoration's geometries
STUFF_MATERIALS = {"wall": ("brick", "stone", "plastic", "wall"), "floor": ("wood", "stone",
                   "fabric", "floor"), "ground": ("stone",), "road": ("stone", "concrete"),
                   "building": ("brick", "glass", "stone", "metal"), "mountain": ("stone",),
                   "tree": ("foliage",), "grass": ("foliage", "grass"), "rock": ("stone", "rock"),
                   "fence": ("wood", "metal", "brick"), "carpet": ("fabric", "carpet"),
                   "bush": ("foliage",), "sidewalk": ("concrete", "tile", "brick"),
                   "curtain": ("fabric", "curtain"), "window": ("glass", "window"),
                   "sky": ("sky",), "water": ("water",), "ice": ("ice",), "snow": ("snow",),
                   "sand": ("sand",)}
MATERIAL_LOOKS = {  # drawn field of each material that drawing.py has no field for
    "carpet": "fabric", "sky": "plastic", "water": "glass", "ice": "glass", "snow": "paper",
    "sand": "stone", "grass": "foliage", "rock": "stone", "curtain": "fabric",
    "window": "glass", "wall": "concrete", "floor": "wood", "food": "ceramic", "fur": "fabric",
    "hair": "fabric", "mirror": "glass", "skin": "leather"}
SEED = 1197


@dataclass(frozen=True)
class Thing:
    """A foreground object kind: its shape and colour, and its parts (names, fixed geometry).

    ``pair`` is (scheme, part a, part b) of :func:`drawing.part_pair` or None; ``decoration``
    is (geometry, part) of :func:`drawing.decoration` or None; ``handle`` names the handle
    part or is "" (no handle). ``materials`` are the material names it can be made of.
    """

    name: str
    shape: str
    color: int
    pair: tuple[str, str, str] | None
    decoration: tuple[str, str] | None
    handle: str
    materials: tuple[str, ...]

    @property
    def parts(self) -> tuple[str, ...]:
        """Every part name the thing can show."""
        out = (*(self.pair[1:] if self.pair else ()), *(self.decoration[1:] if self.decoration
                                                        else ()))
        return (*out, self.handle) if self.handle else out


@dataclass(frozen=True)
class Stuff:
    """A background object kind: the base stuff it is coloured like, and its materials."""

    name: str
    base: str
    materials: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """A scene kind: 1-3 stuff layers top to bottom (options each) and its candidate things."""

    name: str
    layers: tuple[tuple[str, ...], ...]
    things: tuple[str, ...]


@dataclass(frozen=True)
class BrodenVocabulary:
    """The Broden-shaped vocabulary (see the module docstring).

    Attributes:
        names: per category, its label names (category order of ``CATEGORY_SIZES``).
        numbers: global label number (1..1197) of each name.
        stuff, things, scenes: the drawable kinds, most frequent first.
        thing_weights: (len(things),) float64 Zipf-like probabilities; scene_weights likewise.
        material_field: drawable material of each material name; texture_pattern likewise.
    """

    names: dict[str, tuple[str, ...]]
    numbers: dict[str, int]
    stuff: tuple[Stuff, ...]
    things: tuple[Thing, ...]
    scenes: tuple[Scene, ...]
    thing_weights: np.ndarray
    scene_weights: np.ndarray
    material_field: dict[str, str]
    texture_pattern: dict[str, str]

    @cached_property
    def stuff_named(self) -> dict[str, Stuff]:
        """Each stuff kind by name."""
        return {s.name: s for s in self.stuff}

    @cached_property
    def thing_named(self) -> dict[str, Thing]:
        """Each thing kind by name."""
        return {t.name: t for t in self.things}


def zipf(n: int, shift: float) -> np.ndarray:
    """(n,) float64 probabilities proportional to 1 / (rank + shift)."""
    w = 1.0 / (np.arange(n) + shift)
    return w / w.sum()


def _variants(base: tuple[str, ...], n: int) -> tuple[str, ...]:
    """``base`` then ``name-2``, ``name-3``... cycling over ``base`` until n names."""
    return tuple(base[i % len(base)] + (f"-{i // len(base) + 1}" if i >= len(base) else "")
                 for i in range(n))


def _make_stuff(rng: np.random.Generator) -> tuple[Stuff, ...]:
    names = _variants(BASE_STUFF, N_STUFF)
    return tuple(Stuff(n, BASE_STUFF[i % len(BASE_STUFF)],
                       STUFF_MATERIALS.get(BASE_STUFF[i % len(BASE_STUFF)], ()))
                 for i, n in enumerate(names))


def _part_names(thing_names: tuple[str, ...]) -> tuple[str, ...]:
    """234 parts: the base parts (7 are textures), 160 thing names, then ``part-k``."""
    shared = thing_names[100:100 + N_PART_OBJECT]
    n_new = CATEGORY_SIZES["part"] - len(BASE_PARTS) - len(shared)
    return (*BASE_PARTS, *shared, *(f"part-{k}" for k in range(1, n_new + 1)))


def _make_thing(rng: np.random.Generator, name: str, parts: tuple[str, ...],
                part_w: np.ndarray) -> Thing:
    pick = rng.choice(len(parts), size=4, replace=False, p=part_w)
    chosen = [parts[k] for k in pick if parts[k] != name][:3]
    pair = ((PAIR_SCHEMES[rng.integers(3)], chosen[0], chosen[1])
            if rng.random() < 0.6 else None)
    deco = (DECORATIONS[rng.integers(4)], chosen[2]) if rng.random() < 0.4 else None
    handle = "handle" if rng.random() < 0.2 and "handle" not in chosen[:3] else ""
    mats = tuple(rng.choice(MATERIAL_NAMES[:15] + MATERIAL_NAMES[-5:],
                            size=int(rng.integers(1, 4)), replace=False).tolist())
    shape = name.split("-")[0]  # circle-16 is a circle
    return Thing(name, shape, int(rng.integers(len(PALETTE))), pair, deco, handle, mats)


def _make_things(rng: np.random.Generator) -> tuple[tuple[Thing, ...], tuple[str, ...]]:
    names = _variants(BASE_SHAPES, CATEGORY_SIZES["object"] - N_STUFF)
    parts = _part_names(names)
    part_w = zipf(len(parts), 3.0)
    return tuple(_make_thing(rng, n, parts, part_w) for n in names), parts


def _stuff_options(rng: np.random.Generator, stuff: tuple[Stuff, ...], weights: np.ndarray
                   ) -> tuple[str, ...]:
    """1-2 stuff names for one band of a scene, popular stuff more often."""
    picks = rng.choice(len(stuff), size=int(rng.integers(1, 3)), replace=False, p=weights)
    return tuple(stuff[int(k)].name for k in picks)


def _make_scenes(rng: np.random.Generator, stuff: tuple[Stuff, ...], things: tuple[Thing, ...],
                 thing_w: np.ndarray) -> tuple[Scene, ...]:
    stuff_w = zipf(len(stuff), 4.0)
    scenes = []
    for name in _variants(BASE_SCENES, CATEGORY_SIZES["scene"]):
        layers = SCENE_LAYERS.get(name) or tuple(
            _stuff_options(rng, stuff, stuff_w) for _ in range(int(rng.integers(1, 4))))
        cands = rng.choice(len(things), size=12, replace=False, p=thing_w)
        scenes.append(Scene(name, layers, tuple(things[int(k)].name for k in cands)))
    return tuple(scenes)


def _number(names: dict[str, tuple[str, ...]]) -> dict[str, int]:
    numbers: dict[str, int] = {}
    for cat in CATEGORY_SIZES:
        for name in names[cat]:
            numbers.setdefault(name, len(numbers) + 1)
    return numbers


@lru_cache(maxsize=1)
def broden_vocabulary() -> BrodenVocabulary:
    """Build the Broden-shaped vocabulary (deterministic; cached)."""
    rng = np.random.default_rng(SEED)
    stuff = _make_stuff(rng)
    things, parts = _make_things(rng)
    thing_w = zipf(len(things), 10.0)
    scenes = _make_scenes(rng, stuff, things, thing_w)
    names = {"color": COLOR_NAMES, "object": (*(s.name for s in stuff), *(t.name for t in things)),
             "part": parts, "material": MATERIAL_NAMES, "scene": tuple(s.name for s in scenes),
             "texture": TEXTURE_NAMES}
    return BrodenVocabulary(
        names, _number(names), stuff, things, scenes, thing_w, zipf(len(scenes), 5.0),
        {m: MATERIAL_LOOKS.get(m, m) for m in MATERIAL_NAMES},
        {t: DRAWN_PATTERNS[i % len(DRAWN_PATTERNS)] for i, t in enumerate(TEXTURE_NAMES)})
