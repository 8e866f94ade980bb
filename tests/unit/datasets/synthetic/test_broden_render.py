"""The Broden-vocabulary generator (``vocabulary="broden"``), decoded with csv + PIL only."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ray_dissect.datasets.synthetic.broden_vocab import broden_vocabulary
from ray_dissect.datasets.synthetic.generate import generate_dataset

# Broden's category sizes and unique-label count (algorithms.md section 1).
BRODEN_SIZES = {"color": 11, "object": 584, "part": 234, "material": 32, "scene": 468,
                "texture": 47}
BRODEN_UNIQUE = 1197
N_IMAGES = 80


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts."""
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def decode(root: Path, cell: str) -> list[np.ndarray]:
    """Decode the PNG layers of an index.csv cell as (h, w) int64 R + 256 * G."""
    out = []
    for name in filter(None, cell.split(";")):
        a = np.asarray(Image.open(root / "images" / name)).astype(np.int64)
        out.append(a[..., 0] + 256 * a[..., 1])
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below root (relative path) -> its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("bv") / "d", N_IMAGES, seed=1,
                            image_size=48, mask_size=24, vocabulary="broden")


def test_category_sizes_and_overlaps_are_brodens(root: Path) -> None:
    """category.csv, c_*.csv and label.csv list Broden's counts: 1,376 entries, 1,197 labels."""
    cats = {r["name"]: int(r["count"]) for r in read_csv(root / "category.csv")}
    assert cats == BRODEN_SIZES
    for cat, size in BRODEN_SIZES.items():
        numbers = [int(r["number"]) for r in read_csv(root / f"c_{cat}.csv")]
        assert len(numbers) == len(set(numbers)) == size
    labels = read_csv(root / "label.csv")
    assert sorted(int(r["number"]) for r in labels) == list(range(1, BRODEN_UNIQUE + 1))
    n_entries = sum(len(r["category"].split(";")) for r in labels)
    assert n_entries == sum(BRODEN_SIZES.values())


def test_parts_lie_inside_objects_that_have_them(root: Path) -> None:
    """Every part pixel is on an object whose fixed part list names that part."""
    vocab = broden_vocabulary()
    name_of = {n: name for name, n in vocab.numbers.items()}
    n_part_pixels = 0
    for row in read_csv(root / "index.csv"):
        for part in decode(root, row["part"]):
            (obj,) = decode(root, row["object"])
            for y, x in zip(*np.nonzero(part), strict=True):
                thing = vocab.thing_named[name_of[int(obj[y, x])]]
                assert name_of[int(part[y, x])] in thing.parts, row["image"]
            n_part_pixels += int((part > 0).sum())
    assert n_part_pixels > 100


def test_sources_label_as_broden_does(root: Path) -> None:
    """Scenes and textures are whole-image numbers; surfaces carry only colour and material."""
    vocab = broden_vocabulary()
    scene_numbers = {vocab.numbers[n] for n in vocab.names["scene"]}
    texture_numbers = {vocab.numbers[n] for n in vocab.names["texture"]}
    seen = Counter()
    for row in read_csv(root / "index.csv"):
        source = row["image"].split("/")[0]
        seen[source] += 1
        assert row["color"].endswith("_color.png")
        assert all(int(x) in scene_numbers for x in filter(None, row["scene"].split(";")))
        assert all(int(x) in texture_numbers for x in filter(None, row["texture"].split(";")))
        if source == "surfaces":
            assert not row["object"] and not row["part"] and not row["scene"]
        if source == "textures":
            assert row["texture"] and not row["object"] and not row["material"]
    assert set(seen) == {"scenes", "surfaces", "textures"}
    assert seen["scenes"] > seen["textures"] and seen["surfaces"] > seen["textures"]


def test_materials_sit_on_objects_in_scene_images(root: Path) -> None:
    """In scene images every material pixel is also an object pixel."""
    n = 0
    for row in read_csv(root / "index.csv"):
        if row["image"].startswith("scenes/") and row["material"]:
            (mat,), (obj,) = decode(root, row["material"]), decode(root, row["object"])
            assert not ((mat > 0) & (obj == 0)).any()
            n += int((mat > 0).sum())
    assert n > 0


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    """Same seed gives identical files, another seed differs, image i ignores the count."""
    kw = {"image_size": 32, "mask_size": 16, "vocabulary": "broden"}
    a = tree_bytes(generate_dataset(tmp_path / "a", 15, seed=2, **kw))
    b = tree_bytes(generate_dataset(tmp_path / "b", 15, seed=2, **kw))
    c = tree_bytes(generate_dataset(tmp_path / "c", 15, seed=3, **kw))
    small = tree_bytes(generate_dataset(tmp_path / "s", 6, seed=2, **kw))
    assert a == b and a != c
    assert all(a[k] == v for k, v in small.items() if k.startswith("images/"))


def test_unknown_vocabulary_is_refused(tmp_path: Path) -> None:
    """A vocabulary name other than default or broden raises ValueError."""
    with pytest.raises(ValueError, match="unknown vocabulary"):
        generate_dataset(tmp_path / "x", 1, vocabulary="imagenet")
