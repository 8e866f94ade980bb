"""Images of the Broden-shaped vocabulary (``generate_dataset(..., vocabulary="broden")``).

Three sources in Broden's proportions (algorithms.md section 1: ADE20K + Pascal 51%,
OpenSurfaces 40%, DTD 9%), each labelled as Broden labels that source:

- ``scenes`` (ADE20K/Pascal-like): 1-3 stuff bands of a scene plus 1-4 things with their
  parts (part layers lie inside the object's pixels) and sometimes materials; a whole-image
  scene label on 60% of them (ADE20K has scenes, Pascal none).
- ``surfaces`` (OpenSurfaces-like): drawn the same way, but only material (and colour) layers
  are written, and most regions get a material.
- ``textures`` (DTD-like): a whole-image pattern with one or two whole-image texture labels.

Every image also gets the colour layer of :mod:`generate`. Image ``i`` depends only on
``np.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import numpy as np

from ray_dissect.datasets.synthetic import drawing as dr
from ray_dissect.datasets.synthetic.broden_vocab import (
    BrodenVocabulary,
    Scene,
    Thing,
    broden_vocabulary,
    zipf,
)
from ray_dissect.datasets.synthetic.default_vocab import PALETTE, PALETTE_WEIGHTS, STUFF_COLORS
from ray_dissect.datasets.synthetic.drawing import Canvas, Grid

SOURCES = ("scenes", "surfaces", "textures")
SOURCE_SHARES = (0.51, 0.40, 0.09)
SCENE_LABELLED = 0.6  # share of ``scenes`` images with a whole-image scene label
_CANDIDATE_W = zipf(12, 1.0)  # popularity of a scene's 12 candidate things


def _material(vocab: BrodenVocabulary, name: str, rng: np.random.Generator, size: int,
              cv: Canvas, mask: np.ndarray) -> None:
    """Label ``mask`` ((h, w) bool) of ``cv`` as material ``name`` and shade it."""
    cv.mat[mask] = vocab.numbers[name]
    cv.gain[mask] = dr.material_patch(vocab.material_field[name], rng, size, mask.shape)[mask]


def _background(rng: np.random.Generator, g: Grid, scene: Scene, cv: Canvas,
                vocab: BrodenVocabulary, p_material: float) -> None:
    """Fill ``cv`` with 1-3 stuff bands of ``scene``, top to bottom."""
    k = int(rng.integers(1, len(scene.layers) + 1))
    chosen = np.sort(rng.choice(len(scene.layers), size=k, replace=False))
    for layer, (rows, m) in zip(chosen, dr.horizon_bands(rng, g, k), strict=True):
        sub = cv.view((rows, slice(None)))
        options = scene.layers[layer]
        stuff = vocab.stuff_named[options[rng.integers(len(options))]]
        dr.paint(sub.base, m, dr.pick_color(rng, STUFF_COLORS[stuff.base]))
        sub.obj[m] = vocab.numbers[stuff.name]
        if stuff.materials and rng.random() < p_material:
            _material(vocab, stuff.materials[rng.integers(len(stuff.materials))], rng, g.size,
                      sub, m)


def _parts(rng: np.random.Generator, g: Grid, shape: dr.Shape, thing: Thing, cv: Canvas,
           levels: np.ndarray, vocab: BrodenVocabulary) -> None:
    """Draw the parts of ``thing``: layer 1 its handle and region pair, layer 2 a decoration."""
    num = vocab.numbers
    if shape.handle:
        cv.part1[levels == dr.HANDLE] = num[thing.handle]
    if thing.pair is not None and rng.random() < 0.8:
        first, second = dr.part_pair(thing.pair[0], g, shape, levels)
        cv.part1[first], cv.part1[second] = num[thing.pair[1]], num[thing.pair[2]]
        cv.gain[first] *= 0.85
    if thing.decoration is not None and rng.random() < 0.6:
        deco = dr.decoration(thing.decoration[0], rng, g, shape, levels)
        cv.part2[deco] = num[thing.decoration[1]]
        dr.paint(cv.base, deco, PALETTE[(thing.color + rng.integers(1, len(PALETTE)))
                                        % len(PALETTE)])


def _thing(rng: np.random.Generator, g: Grid, thing: Thing, cv: Canvas,
           vocab: BrodenVocabulary, p_material: float) -> None:
    """Draw one ``thing`` (occluding earlier drawings) with its material and parts."""
    s = g.size
    cy, cx = rng.uniform(0.15 * s, 0.85 * s, size=2)
    shape = dr.Shape(thing.shape, float(cy), float(cx), rng.uniform(0.12, 0.3) * s,
                     rng.uniform(0, 2 * np.pi), rng.uniform(0.45, 0.75),
                     handle=bool(thing.handle) and bool(rng.random() < 0.7))
    win = shape.window(s)
    sub, levels = cv.view(win), shape.levels(win)
    m = levels > 0
    dr.paint(sub.base, m, dr.pick_color(rng, PALETTE[thing.color:thing.color + 1], jitter=15))
    sub.gain[m], sub.obj[m] = 1.0, vocab.numbers[thing.name]
    sub.mat[m], sub.part1[m], sub.part2[m] = 0, 0, 0
    if rng.random() < p_material:
        _material(vocab, thing.materials[rng.integers(len(thing.materials))], rng, s, sub, m)
    _parts(rng, g.crop(win), shape, thing, sub, levels, vocab)


def _pick_thing(rng: np.random.Generator, scene: Scene, vocab: BrodenVocabulary) -> Thing:
    """A scene's candidate (85%, popular ones first) or any thing by global popularity."""
    if rng.random() < 0.85:
        return vocab.thing_named[scene.things[rng.choice(len(scene.things), p=_CANDIDATE_W)]]
    return vocab.things[rng.choice(len(vocab.things), p=vocab.thing_weights)]


def render_scene(rng: np.random.Generator, g: Grid, vocab: BrodenVocabulary,
                 p_material: float) -> tuple[Canvas, dict[str, list[int]], Scene]:
    """Render stuff bands and 1-4 things of a random scene; return canvas, {}, the scene."""
    scene = vocab.scenes[rng.choice(len(vocab.scenes), p=vocab.scene_weights)]
    cv = Canvas.new(g.size)
    _background(rng, g, scene, cv, vocab, p_material)
    for _ in range(rng.integers(1, 5)):
        _thing(rng, g, _pick_thing(rng, scene, vocab), cv, vocab, p_material)
    return cv, {}, scene


def render_texture(rng: np.random.Generator, g: Grid, vocab: BrodenVocabulary
                   ) -> tuple[Canvas, dict[str, list[int]]]:
    """Render a DTD-like image of 1-2 patterns; return its canvas and texture labels."""
    names = vocab.names["texture"]
    chosen = rng.choice(len(names), size=1 if rng.random() < 0.7 else 2, replace=False)
    colors = rng.choice(len(PALETTE), size=len(chosen) + 1, replace=False, p=PALETTE_WEIGHTS)
    cv = Canvas.new(g.size)
    cv.base[:] = PALETTE[colors[0]][:, None, None]
    for j, t in enumerate(chosen):
        period = g.size * (rng.uniform(0.05, 0.12) if j == 0 else rng.uniform(0.15, 0.3))
        pattern = dr.pattern_mask(vocab.texture_pattern[names[t]], rng, g, period)
        dr.paint(cv.base, pattern, PALETTE[colors[j + 1]])
    cv.base[:] += rng.integers(-10, 11, size=3).astype(np.float32)[:, None, None]
    return cv, {"texture": sorted(vocab.numbers[names[t]] for t in chosen)}


def render_broden(rng: np.random.Generator, g: Grid) -> tuple[str, Canvas, dict[str, list[int]]]:
    """Render one image of a random source; return (source, canvas, whole-image labels)."""
    vocab = broden_vocabulary()
    source = SOURCES[int(rng.choice(len(SOURCES), p=SOURCE_SHARES))]
    if source == "textures":
        return (source, *render_texture(rng, g, vocab))
    cv, whole, scene = render_scene(rng, g, vocab, 0.3 if source == "scenes" else 0.9)
    if source == "scenes" and rng.random() < SCENE_LABELLED:
        whole = {"scene": [vocab.numbers[scene.name]]}
    return source, cv, whole
