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

The names, label numbers and colours drawn are those of :mod:`default_vocab` (or, with
``vocabulary="broden"``, of :mod:`broden_vocab`, drawn by :mod:`broden_render`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ray_dissect.datasets.synthetic import drawing as dr
from ray_dissect.datasets.synthetic.default_vocab import (
    CATEGORIES,
    COLOR_NUMBERS,
    DECORATIONS,
    INDEX_HEADER,
    LABEL_NUMBERS,
    PALETTE,
    PALETTE_WEIGHTS,
    PART_GAINS,
    PART_SCHEMES,
    SCENE_LAYERS,
    SCENE_NAMES,
    SHAPE_MATERIALS,
    SHAPE_NAMES,
    SOURCE_LAYERS,
    SOURCES,
    STUFF_COLORS,
    STUFF_MATERIALS,
    TEXTURE_NAMES,
    VOCABULARIES,
    VOCABULARY,
    color_label_map,
)
from ray_dissect.datasets.synthetic.drawing import Canvas, Grid

logger = logging.getLogger(__name__)


def _apply_material(name: str, rng: np.random.Generator, size: int, cv: Canvas,
                    mask: np.ndarray) -> None:
    """Label ``mask`` ((h, w) bool, a window of an s x s image) as material ``name``."""
    cv.mat[mask] = LABEL_NUMBERS[name]
    cv.gain[mask] = dr.material_patch(name, rng, size, mask.shape)[mask]


def _draw_background(rng: np.random.Generator, g: Grid, scene: str, cv: Canvas) -> None:
    """Fill ``cv`` with 1-3 stuff regions of ``scene`` separated by wavy horizon lines."""
    layers = SCENE_LAYERS[scene]
    k = int(rng.integers(1, len(layers) + 1))
    chosen = np.sort(rng.choice(len(layers), size=k, replace=False))
    for layer, (rows, m) in zip(chosen, dr.horizon_bands(rng, g, k), strict=True):
        sub = cv.view((rows, slice(None)))
        name = layers[layer][rng.integers(len(layers[layer]))]
        dr.paint(sub.base, m, dr.pick_color(rng, STUFF_COLORS[name]))
        sub.obj[m] = LABEL_NUMBERS[name]
        materials = STUFF_MATERIALS.get(name, ())
        if materials and rng.random() < 0.6:
            _apply_material(materials[rng.integers(len(materials))], rng, g.size, sub, m)


def _draw_parts(rng: np.random.Generator, g: Grid, shape: dr.Shape, cv: Canvas,
                levels: np.ndarray, color_idx: int) -> None:
    """Draw part layer 1 (handle, a ``PART_SCHEMES`` pair) and 2 (a decoration) of a shape.

    ``levels`` is the (h, w) uint8 output of :meth:`Shape.levels` on the window of ``cv``.
    """
    pairs = [("handle", levels == dr.HANDLE)] if shape.handle else []
    if rng.random() < 0.6:
        scheme = PART_SCHEMES[rng.integers(len(PART_SCHEMES))]
        pairs += zip(scheme, dr.part_pair(scheme[0], g, shape, levels), strict=True)
    for name, mask in pairs:
        cv.part1[mask] = LABEL_NUMBERS[name]
        cv.gain[mask] *= PART_GAINS[name]
    if rng.random() < 0.4:
        name = DECORATIONS[rng.integers(len(DECORATIONS))]
        deco = dr.decoration(name, rng, g, shape, levels)
        cv.part2[deco] = LABEL_NUMBERS[name]
        dr.paint(cv.base, deco, PALETTE[(color_idx + rng.integers(1, len(PALETTE))) % len(PALETTE)])


def _draw_shape(rng: np.random.Generator, g: Grid, cv: Canvas) -> None:
    """Draw one random foreground shape (occluding earlier ones) with material and parts."""
    s = g.size
    cy, cx = rng.uniform(0.15 * s, 0.85 * s, size=2)
    shape = dr.Shape(SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))], float(cy), float(cx),
                     rng.uniform(0.12, 0.3) * s, rng.uniform(0, 2 * np.pi),
                     rng.uniform(0.45, 0.75), handle=bool(rng.random() < 0.2))
    win = shape.window(s)
    sub, levels = cv.view(win), shape.levels(win)
    m = levels > 0
    color_idx = int(rng.choice(len(PALETTE), p=PALETTE_WEIGHTS))
    dr.paint(sub.base, m, dr.pick_color(rng, PALETTE[color_idx:color_idx + 1], jitter=15))
    sub.gain[m], sub.obj[m] = 1.0, LABEL_NUMBERS[shape.kind]
    sub.mat[m], sub.part1[m], sub.part2[m] = 0, 0, 0
    if rng.random() < 0.5:
        _apply_material(SHAPE_MATERIALS[rng.integers(len(SHAPE_MATERIALS))], rng, s, sub, m)
    _draw_parts(rng, g.crop(win), shape, sub, levels, color_idx)


def _render_objects(rng: np.random.Generator, g: Grid) -> tuple[Canvas, dict[str, list[int]]]:
    """Render a scene image; return its canvas and whole-image labels (scene, texture)."""
    scene = SCENE_NAMES[rng.integers(len(SCENE_NAMES))]
    cv = Canvas.new(g.size)
    _draw_background(rng, g, scene, cv)
    whole = {"scene": [LABEL_NUMBERS[scene]], "texture": []}
    if rng.random() < 0.15:  # patterned background, labelled as a whole-image texture
        name = TEXTURE_NAMES[rng.integers(len(TEXTURE_NAMES))]
        cv.gain[dr.pattern_mask(name, rng, g, g.size * rng.uniform(0.05, 0.1))] *= 0.7
        whole["texture"].append(LABEL_NUMBERS[name])
    for _ in range(rng.integers(1, 5)):
        _draw_shape(rng, g, cv)
    return cv, whole


def _render_texture(rng: np.random.Generator, g: Grid) -> tuple[Canvas, dict[str, list[int]]]:
    """Render a dtd-like texture image; return its canvas and its 1-2 texture labels."""
    k = 1 if rng.random() < 0.7 else 2
    chosen = rng.choice(len(TEXTURE_NAMES), size=k, replace=False)
    colors = rng.choice(len(PALETTE), size=k + 1, replace=False, p=PALETTE_WEIGHTS)
    cv = Canvas.new(g.size)
    cv.base[:] = PALETTE[colors[0]][:, None, None]
    for j, t in enumerate(chosen):
        period = g.size * (rng.uniform(0.05, 0.12) if j == 0 else rng.uniform(0.15, 0.3))
        dr.paint(cv.base, dr.pattern_mask(TEXTURE_NAMES[t], rng, g, period), PALETTE[colors[j + 1]])
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


def _color_layer(jpeg: bytes, mask_size: int) -> np.ndarray:
    """Decode ``jpeg``, area-average it to mask_size and return ``(m, m)`` uint16 colour labels."""
    im: Image.Image = Image.open(io.BytesIO(jpeg))
    im = im.convert("RGB") if im.mode != "RGB" else im
    if im.width % mask_size == 0:
        im = im.reduce(im.width // mask_size)
    else:
        im = im.resize((mask_size, mask_size), Image.Resampling.BOX)
    return COLOR_NUMBERS[color_label_map(np.asarray(im))]


def _write_file(path: Path, data: bytes) -> None:
    """Create or truncate ``path`` and write ``data`` with plain syscalls (no file object)."""
    fd, view = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _write_sample(root: Path, index: int, split: str, source: str, cv: Canvas,
                  whole: dict[str, list[int]], mask_size: int, stats: _Stats) -> list[str]:
    """Write the JPEG and label PNGs of one image; return its ``index.csv`` row."""
    s = cv.gain.shape[0]
    stem = f"{source}/{source[:3]}_{index:06d}"
    buf = io.BytesIO()
    Image.fromarray(cv.rgb()).save(buf, format="JPEG", quality=95)
    _write_file(root / "images" / f"{stem}.jpg", buf.getvalue())
    layers = {"color": [_color_layer(buf.getvalue(), mask_size)]}
    for cat, maps in (("object", [cv.obj]), ("part", [cv.part1, cv.part2]),
                      ("material", [cv.mat])):
        if cat in SOURCE_LAYERS[source]:
            layers[cat] = [a for a in (dr.nearest(m, mask_size) for m in maps) if a.any()]
    cells = {cat: ";".join(map(str, nums)) for cat, nums in whole.items()}
    for cat, maps in layers.items():
        names = [f"{stem}_{f'part_{k}' if cat == 'part' else cat}.png"
                 for k in range(1, len(maps) + 1)]
        for name, lab in zip(names, maps, strict=True):
            _write_file(root / "images" / name, dr.label_png(lab))
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


def _write_tables(root: Path, rows: list[list[str]], stats: _Stats,
                  numbers: dict[str, int], vocabulary: dict[str, tuple[str, ...]]) -> None:
    """Write ``index.csv``, ``label.csv``, ``category.csv`` and the ``c_*.csv`` files.

    ``numbers`` gives each label name its global number; ``vocabulary`` the names per category.
    """
    _write_csv(root / "index.csv", INDEX_HEADER, rows)
    labels = []
    for name, num in numbers.items():
        cats = ";".join(f"{c}({stats.count[c][num]})" for c in CATEGORIES if name in vocabulary[c])
        labels.append([num, name, cats, stats.count["any"][num],
                       f"{stats.mean_cover('any', num):.6f}", ""])
    _write_csv(root / "label.csv", ("number", "name", "category", "frequency", "coverage", "syns"),
               labels)
    cat_rows = [[c, 1, len(vocabulary[c]), len(vocabulary[c]), stats.images[c]]
                for c in CATEGORIES]
    _write_csv(root / "category.csv", ("name", "first", "last", "count", "frequency"), cat_rows)
    for cat in CATEGORIES:
        nums = [numbers[n] for n in vocabulary[cat]]
        codes = [[code, num, name, stats.count[cat][num],
                  f"{stats.mean_cover(cat, num):.6f}"]
                 for code, (num, name) in enumerate(zip(nums, vocabulary[cat], strict=True), 1)]
        _write_csv(root / f"c_{cat}.csv", ("code", "number", "name", "frequency", "coverage"),
                   codes)


def _prepare_root(root: Path, sources: Sequence[str]) -> None:
    """Create ``root`` and its image folders; refuse a file or a non-empty directory."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"dataset root {root} exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"dataset root {root} is not empty; refusing to overwrite it")
    for source in sources:
        (root / "images" / source).mkdir(parents=True, exist_ok=True)


def _render_default(rng: np.random.Generator, g: Grid
                    ) -> tuple[str, Canvas, dict[str, list[int]]]:
    """One image of the default vocabulary: (source, canvas, whole-image labels)."""
    source = "objects" if rng.random() < 0.8 else "textures"
    render = _render_objects if source == "objects" else _render_texture
    return (source, *render(rng, g))


def generate_dataset(root: Path | str, n_images: int, seed: int = 0, *, image_size: int = 224,
                     mask_size: int = 112, vocabulary: str = "default") -> Path:
    """Write a Broden-format dataset of n_images to root (created; must be empty or absent).

    Args:
        root: Output directory; created if absent, must be empty if present.
        n_images: Number of images (default vocabulary: about 80% ``objects``, 20%
            ``textures``; ``broden``: the sources of :mod:`broden_render`).
        seed: Non-negative seed; image ``i`` uses ``np.random.default_rng([seed, i])``.
        image_size: Side of the square RGB JPEG images (``ih = iw``), at least 16.
        mask_size: Side of the square label PNGs (``sh = sw``), at least 1.
        vocabulary: ``default`` (112 concepts) or ``broden`` (1,197 concepts in Broden's
            category sizes, :mod:`broden_vocab`).

    Returns:
        ``root`` as a Path.

    Raises:
        ValueError: If root is a file or a non-empty directory, or an argument is invalid.
    """
    if n_images < 0 or seed < 0 or image_size < 16 or mask_size < 1:
        raise ValueError("need n_images >= 0, seed >= 0, image_size >= 16 and mask_size >= 1")
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; expected one of {VOCABULARIES}")
    root = Path(root)
    numbers, names, render, sources = _vocabulary(vocabulary)
    _prepare_root(root, sources)
    grid, stats, rows = Grid.make(image_size), _Stats(len(numbers)), []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        split = "train" if rng.random() < 0.7 else "val"
        rows.append(_write_sample(root, i, split, *render(rng, grid), mask_size, stats))
        if (i + 1) % 1000 == 0:
            logger.debug("generated %d/%d images", i + 1, n_images)
    _write_tables(root, rows, stats, numbers, names)
    _write_readme(root, rows, seed, image_size, mask_size, len(numbers))
    logger.info("wrote %d images with seed %d to %s", n_images, seed, root)
    return root


Render = Callable[[np.random.Generator, Grid], tuple[str, Canvas, dict[str, list[int]]]]


def _vocabulary(name: str) -> tuple[dict[str, int], dict[str, tuple[str, ...]], Render,
                                    tuple[str, ...]]:
    """(label numbers, names per category, render function, sources) of a vocabulary."""
    if name == "default":
        return LABEL_NUMBERS, VOCABULARY, _render_default, SOURCES
    from ray_dissect.datasets.synthetic import broden_render, broden_vocab

    vocab = broden_vocab.broden_vocabulary()
    return vocab.numbers, vocab.names, broden_render.render_broden, broden_render.SOURCES


def _write_readme(root: Path, rows: list[list[str]], seed: int, image_size: int,
                  mask_size: int, n_labels: int) -> None:
    """Write ``README.txt``: seed, image counts per source and split, sizes, label count."""
    n_images = len(rows)
    sources = Counter(r[0].split("/")[0] for r in rows)
    n_train = sum(r[1] == "train" for r in rows)
    n_tex = sources.get("textures", 0)
    per_source = ", ".join(f"{k}: {v}" for k, v in sources.items()) \
        if set(sources) - set(SOURCES) else f"objects: {n_images - n_tex}, textures: {n_tex}"
    (root / "README.txt").write_text(
        "Synthetic Broden-format concept dataset generated by "
        "ray_dissect.datasets.synthetic.generate.\n"
        f"seed: {seed}\nimages: {n_images} ({per_source}; "
        f"train: {n_train}, val: {n_images - n_train})\n"
        f"image_size: {image_size}, mask_size: {mask_size}\n"
        f"labels: {n_labels} in categories {', '.join(CATEGORIES)}\n"
        "Procedurally drawn shapes, stuff regions and patterns; no external data.\n",
        encoding="utf-8")
