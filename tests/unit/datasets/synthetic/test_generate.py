"""Tests of the procedural Broden-format dataset generator (files decoded with csv + PIL)."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_dissect.datasets.synthetic import default_vocab as voc
from ray_dissect.datasets.synthetic import drawing as _drawing
from ray_dissect.datasets.synthetic.default_vocab import COLOR_NAMES, SHAPE_NAMES, color_label_map
from ray_dissect.datasets.synthetic.generate import generate_dataset

CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
PIXEL_CATEGORIES = ("color", "object", "part", "material")
N_IMAGES = 40


def read_csv(path: Path) -> list[dict[str, str]]:
    """Return the rows of a CSV file as dicts."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_header(path: Path) -> list[str]:
    """Return the header row of a CSV file."""
    with path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def decode_png(path: Path) -> np.ndarray:
    """Decode a Broden label PNG to an (h, w) int64 array of R + 256 * G (checks B == 0)."""
    im = Image.open(path)
    assert im.mode == "RGB" and im.format == "PNG"
    a = np.asarray(im).astype(np.int64)
    assert (a[..., 2] == 0).all()
    return a[..., 0] + 256 * a[..., 1]


def items(cell: str) -> list[str]:
    """Split a ';'-separated index.csv cell (empty cell -> no items)."""
    return [x for x in cell.split(";") if x]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Map every file below root (relative path) to its bytes."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def downsample(im: Image.Image, m: int) -> Image.Image:
    """The generator's documented area-average rule for the colour layer."""
    if im.width % m == 0:
        return im.reduce(im.width // m)
    return im.resize((m, m), Image.Resampling.BOX)


class Dataset:
    """A generated dataset decoded with csv + PIL only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index = read_csv(root / "index.csv")
        self.labels = {int(r["number"]): r for r in read_csv(root / "label.csv")}
        self.number = {r["name"]: n for n, r in self.labels.items()}
        self.codes = {c: read_csv(root / f"c_{c}.csv") for c in CATEGORIES}
        self.cat_numbers = {c: {int(r["number"]) for r in rows} for c, rows in self.codes.items()}

    def layers(self, row: dict[str, str], cat: str) -> list[np.ndarray]:
        """Decode the PNG layers of one category cell."""
        return [decode_png(self.root / "images" / x) for x in items(row[cat])]


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("broden") / "data"
    assert generate_dataset(root, N_IMAGES, seed=0, image_size=64, mask_size=32) == root
    return Dataset(root)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    kw = {"image_size": 48, "mask_size": 24}
    a = tree_bytes(generate_dataset(tmp_path / "a", 20, seed=3, **kw))
    b = tree_bytes(generate_dataset(tmp_path / "b", 20, seed=3, **kw))
    c = tree_bytes(generate_dataset(tmp_path / "c", 20, seed=4, **kw))
    assert a == b
    assert a != c
    assert "README.txt" in a and b"seed: 3" in a["README.txt"]


def test_image_i_does_not_depend_on_other_images(tmp_path: Path) -> None:
    kw = {"seed": 5, "image_size": 48, "mask_size": 24}
    big = tree_bytes(generate_dataset(tmp_path / "big", 12, **kw))
    small = tree_bytes(generate_dataset(tmp_path / "small", 5, **kw))
    images = {k: v for k, v in small.items() if k.startswith("images/")}
    assert images and all(big[k] == v for k, v in images.items())


def test_index_header_rows_and_images(ds: Dataset) -> None:
    assert read_header(ds.root / "index.csv") == [
        "image", "split", "ih", "iw", "sh", "sw", *CATEGORIES]
    assert len(ds.index) == N_IMAGES
    assert {r["split"] for r in ds.index} == {"train", "val"}
    sources = Counter(r["image"].split("/")[0] for r in ds.index)
    assert set(sources) == {"objects", "textures"}
    assert sources["objects"] > 2 * sources["textures"] > 0
    for row in ds.index:
        assert (row["ih"], row["iw"], row["sh"], row["sw"]) == ("64", "64", "32", "32")
        assert re.fullmatch(r"(objects/obj|textures/tex)_\d{6}\.jpg", row["image"])
        im = Image.open(ds.root / "images" / row["image"])
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 64))
        assert len(items(row["color"])) == 1
        if row["image"].startswith("textures/"):
            assert not any(row[c] for c in ("object", "part", "material", "scene"))
            assert 1 <= len(items(row["texture"])) <= 2
        else:
            assert len(items(row["object"])) == 1 and len(items(row["scene"])) == 1
            assert len(items(row["part"])) <= 2


def test_table_headers_and_numbering(ds: Dataset) -> None:
    assert read_header(ds.root / "label.csv") == [
        "number", "name", "category", "frequency", "coverage", "syns"]
    assert read_header(ds.root / "category.csv") == ["name", "first", "last", "count", "frequency"]
    assert sorted(ds.labels) == list(range(1, len(ds.labels) + 1))
    assert 100 <= len(ds.labels) <= 140
    assert len(ds.number) == len(ds.labels)  # names are unique
    for cat in CATEGORIES:
        assert read_header(ds.root / f"c_{cat}.csv") == [
            "code", "number", "name", "frequency", "coverage"]
        codes = [int(r["code"]) for r in ds.codes[cat]]
        assert codes == list(range(1, len(codes) + 1))
        for r in ds.codes[cat]:
            assert ds.labels[int(r["number"])]["name"] == r["name"]
    for r in read_csv(ds.root / "category.csv"):
        assert (int(r["first"]), int(r["last"])) == (1, len(ds.codes[r["name"]]))
        assert int(r["count"]) == len(ds.codes[r["name"]])
    assert [r["name"] for r in ds.codes["color"]] == list(COLOR_NAMES)


def test_every_label_belongs_to_its_column_category(ds: Dataset) -> None:
    for row in ds.index:
        for cat in PIXEL_CATEGORIES:
            for lab in ds.layers(row, cat):
                assert lab.shape == (32, 32)
                present = set(np.unique(lab).tolist()) - {0}
                assert present, f"empty layer in {row['image']} {cat}"
                assert present <= ds.cat_numbers[cat], (row["image"], cat, present)
        for cat in ("scene", "texture"):
            for x in items(row[cat]):
                assert x.isdigit() and int(x) in ds.cat_numbers[cat]


def test_parts_lie_inside_foreground_shapes(ds: Dataset) -> None:
    shapes = np.array([ds.number[n] for n in SHAPE_NAMES])
    n_part_pixels = 0
    for row in ds.index:
        parts = ds.layers(row, "part")
        if not parts:
            continue
        (obj,) = ds.layers(row, "object")
        foreground = np.isin(obj, shapes)
        for part in parts:
            assert not ((part > 0) & ~foreground).any(), row["image"]
            n_part_pixels += int((part > 0).sum())
    assert n_part_pixels > 0


def test_color_layer_is_color_label_map_of_decoded_jpeg(ds: Dataset) -> None:
    to_number = np.array([ds.number[n] for n in COLOR_NAMES])
    for row in ds.index:
        im = Image.open(ds.root / "images" / row["image"]).convert("RGB")
        expected = to_number[color_label_map(np.asarray(downsample(im, 32)))]
        (layer,) = ds.layers(row, "color")
        np.testing.assert_array_equal(layer, expected, err_msg=row["image"])


def test_all_six_categories_occur(ds: Dataset) -> None:
    freq = {r["name"]: int(r["frequency"]) for r in read_csv(ds.root / "category.csv")}
    assert set(freq) == set(CATEGORIES)
    for cat in CATEGORIES:
        assert freq[cat] > 0
        assert any(row[cat] for row in ds.index), cat
    assert freq["color"] == N_IMAGES


def recount(ds: Dataset) -> tuple[dict, dict, dict, dict]:
    """Recompute per-label statistics from the files."""
    per_cat: dict[str, Counter] = defaultdict(Counter)
    cover_cat: dict[str, Counter] = defaultdict(Counter)
    anyf: Counter = Counter()
    cover_any: Counter = Counter()
    for row in ds.index:
        seen: dict[int, float] = {}
        for cat in CATEGORIES:
            cov: Counter = Counter()
            for lab in ds.layers(row, cat) if cat in PIXEL_CATEGORIES else []:
                nums, counts = np.unique(lab[lab > 0], return_counts=True)
                for n, k in zip(nums.tolist(), counts.tolist(), strict=True):
                    cov[n] += k / lab.size
            for x in items(row[cat]) if cat not in PIXEL_CATEGORIES else []:
                cov[int(x)] = 1.0
            for n, c in cov.items():
                per_cat[cat][n] += 1
                cover_cat[cat][n] += min(c, 1.0)
                seen[n] = max(seen.get(n, 0.0), min(c, 1.0))
        for n, c in seen.items():
            anyf[n] += 1
            cover_any[n] += c
    return per_cat, cover_cat, anyf, cover_any


def test_label_statistics_match_files(ds: Dataset) -> None:
    per_cat, cover_cat, anyf, cover_any = recount(ds)
    for n, r in ds.labels.items():
        assert int(r["frequency"]) == anyf[n], r["name"]
        expected_cover = cover_any[n] / anyf[n] if anyf[n] else 0.0
        assert float(r["coverage"]) == pytest.approx(expected_cover, abs=1e-5), r["name"]
        cats = dict(re.fullmatch(r"(\w+)\((\d+)\)", x).groups() for x in r["category"].split(";"))
        assert set(cats) == {c for c in CATEGORIES if n in ds.cat_numbers[c]}
        for cat, count in cats.items():
            assert int(count) == per_cat[cat][n], (r["name"], cat)
    for cat in CATEGORIES:
        for r in ds.codes[cat]:
            n = int(r["number"])
            assert int(r["frequency"]) == per_cat[cat][n]
            mean = cover_cat[cat][n] / per_cat[cat][n] if per_cat[cat][n] else 0.0
            assert float(r["coverage"]) == pytest.approx(mean, abs=1e-5)
    for r in read_csv(ds.root / "category.csv"):
        having = sum(bool(row[r["name"]]) for row in ds.index)
        assert int(r["frequency"]) == having


def test_one_label_is_shared_by_two_categories(ds: Dataset) -> None:
    shared = [r for r in ds.labels.values() if ";" in r["category"]]
    assert [r["name"] for r in shared] == ["stripes"]
    assert re.fullmatch(r"part\(\d+\);texture\(\d+\)", shared[0]["category"])


def test_primary_colours_are_plentiful(ds: Dataset) -> None:
    for name in ("red", "green", "blue", "yellow"):
        r = ds.labels[ds.number[name]]
        assert int(r["frequency"]) >= N_IMAGES // 5, name
        assert float(r["coverage"]) >= 0.08, name


def test_default_and_non_divisible_sizes(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", 4, seed=1)
    row = read_csv(root / "index.csv")[0]
    assert (row["ih"], row["sh"]) == ("224", "112")
    assert Image.open(root / "images" / row["image"]).size == (224, 224)
    assert decode_png(root / "images" / items(row["color"])[0]).shape == (112, 112)
    odd = Dataset(generate_dataset(tmp_path / "odd", 6, seed=2, image_size=50, mask_size=32))
    to_number = np.array([odd.number[n] for n in COLOR_NAMES])
    for row in odd.index:
        im = Image.open(odd.root / "images" / row["image"]).convert("RGB")
        expected = to_number[color_label_map(np.asarray(downsample(im, 32)))]
        np.testing.assert_array_equal(odd.layers(row, "color")[0], expected)
        assert all(lab.shape == (32, 32) for c in PIXEL_CATEGORIES for lab in odd.layers(row, c))


def test_refuses_non_empty_or_file_root(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(tmp_path / "full", 2)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_dataset(tmp_path / "file", 2)
    (tmp_path / "empty").mkdir()
    assert (generate_dataset(tmp_path / "empty", 1, image_size=32, mask_size=16)
            / "index.csv").is_file()


def test_color_label_map_hand_picked_pixels() -> None:
    cases = {
        (255, 0, 0): "red", (0, 0, 255): "blue", (0, 255, 0): "green", (255, 255, 0): "yellow",
        (255, 255, 255): "white", (0, 0, 0): "black", (128, 128, 128): "grey",
        (255, 140, 0): "orange", (255, 170, 200): "pink", (128, 0, 128): "purple",
        (130, 75, 30): "brown", (70, 130, 220): "blue", (200, 30, 30): "red",
    }
    rgb = np.array([list(cases)], dtype=np.uint8)  # (1, n, 3)
    out = color_label_map(rgb)
    assert out.shape == (1, len(cases)) and out.dtype == np.int64
    assert [COLOR_NAMES[i] for i in out[0]] == list(cases.values())
    with pytest.raises(ValueError):
        color_label_map(np.zeros((4, 4), np.uint8))


# The first vocabulary, in number order: these labels keep numbers 1..60 forever.
FIRST_VOCABULARY = (
    "black blue brown grey green orange pink purple red white yellow "  # colour
    "sky wall ceiling floor ground grass sand water road building mountain tree "  # object
    "circle square triangle ellipse star cross ring diamond "
    "rim core stripes spots "  # part
    "metal wood fabric glass plastic stone brick foliage "  # material
    "beach ocean desert forest field mountains street kitchen bedroom "  # scene
    "dotted checkered zigzagged grid wavy crosshatched spiralled blotchy").split()  # texture


def test_first_vocabulary_keeps_its_numbers(ds: Dataset) -> None:
    assert [ds.number[name] for name in FIRST_VOCABULARY] == list(range(1, 61))
    later = [n for n in ds.labels if n > 60]
    assert later and all(ds.labels[n]["name"] not in FIRST_VOCABULARY for n in later)


def test_vocabulary_tables_are_consistent() -> None:
    assert set(voc.STUFF_NAMES) == {n for layers in voc.SCENE_LAYERS.values()
                                    for options in layers for n in options}
    assert set(voc.STUFF_MATERIALS) <= set(voc.STUFF_NAMES)
    used = set(voc.SHAPE_MATERIALS).union(*voc.STUFF_MATERIALS.values())
    assert used == set(voc.MATERIAL_NAMES) == set(_drawing.MATERIALS)
    parts = {"handle", *voc.DECORATIONS}.union(*voc.PART_SCHEMES)
    assert parts == set(voc.PART_NAMES) == set(voc.PART_GAINS) | set(voc.DECORATIONS)
    assert set(voc.TEXTURE_NAMES) <= set(_drawing.PATTERNS)
    every = [n for cat in voc.CATEGORIES for n in voc.VOCABULARY[cat]]
    assert len(every) == len(set(every)) + 1 == len(voc.LABEL_NUMBERS) + 1  # "stripes" twice
    for cat, names in voc.VOCABULARY.items():
        assert len(set(names)) == len(names), cat


@pytest.mark.parametrize("kind", SHAPE_NAMES)
def test_shape_levels_nest_inside_the_outline(kind: str) -> None:
    """Scaled copies stay inside the shape: no inner pixel touches the outside (holes aside)."""
    shape = _drawing.Shape(kind, 100.0, 100.0, 80.0, 0.4, 0.6, handle=True)
    levels = shape.levels(shape.window(200)).astype(np.int64)
    assert {1, 2, _drawing.HANDLE} <= set(np.unique(levels).tolist())  # a ring has no core
    inner = (levels == 2) | (levels == 3)
    if kind not in ("ring", "crescent"):
        outside = np.pad(levels == 0, 1, constant_values=True)
        touching = outside[:-2, 1:-1] | outside[2:, 1:-1] | outside[1:-1, :-2] | outside[1:-1, 2:]
        assert not (inner & touching).any()


def test_at_least_100_labels_occur_in_300_small_images(tmp_path: Path) -> None:
    """Counted from the files: pixel labels of every layer plus whole-image labels."""
    assert len(voc.LABEL_NUMBERS) >= 100
    small = Dataset(generate_dataset(tmp_path / "s", 300, seed=0, image_size=64, mask_size=32))
    seen: set[int] = set()
    for row in small.index:
        for cat in CATEGORIES:
            if cat in PIXEL_CATEGORIES:
                seen.update(int(v) for lab in small.layers(row, cat) for v in np.unique(lab))
            else:
                seen.update(int(x) for x in items(row[cat]))
    seen.discard(0)
    assert len(seen) >= 100, sorted(set(small.labels) - seen)
