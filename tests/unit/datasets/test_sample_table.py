"""The compact sample table returns exactly what the old one-object-per-row parse returned."""

from __future__ import annotations

import csv
import io
import pickle
from pathlib import Path

import pytest

from ray_dissect.datasets.base import Sample
from ray_dissect.datasets.broden import BrodenDataset, read_index
from ray_dissect.datasets.sample_table import SampleTableBuilder
from ray_dissect.datasets.synthetic.generate import generate_dataset
from ray_dissect.spec import DatasetSpec

CATS = ("color", "object", "part", "material", "scene", "texture")
HEADER = "image,split,ih,iw,sh,sw," + ",".join(CATS)
ROWS = [  # edge cases: spaces, empty items, several layers, whole labels, no data, unicode
    "a/img_0.jpg,train,224,224,112,112,a/c0.png,a/o0.png,a/p1.png;a/p2.png,,12,",
    "a/img_1.jpg,val,224,220,112,112,, 7 ;;a/o1.png,,,,314;194",
    "b/img_2.jpg,train,10,20,112,112,,,,,,",
    "",
    "b/ümlaut_3.jpg,train,224,224,112,112,b/c3.png,,,b/m3.png,5,",
    "ade20k/img_4.jpg,train,224,224,112,112,,,,,,9",
    "ade20k/img_5.jpg,train,224,224,112,112,c5.png",
]


def old_parse(text: str, categories: tuple[str, ...], subset: str | None,
              limit: int | None) -> tuple[Sample, ...]:
    """The parse BrodenDataset did before the compact table (csv.DictReader, one Sample per row)."""
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if subset:
        rows = [r for r in rows if subset in r["image"]]
    samples = []
    for row in rows:
        pixel, whole = [], []
        for cat in categories:
            for item in filter(None, (row.get(cat) or "").split(";")):
                item = item.strip()
                if item.isdigit():
                    whole.append((cat, int(item)))
                elif item:
                    pixel.append((cat, item))
        samples.append(Sample(row["image"], (int(row["ih"]), int(row["iw"])), tuple(pixel),
                              tuple(whole)))
    kept = [s for s in samples if s.pixel_layers or s.image_labels]
    return tuple(kept[:limit] if limit is not None else kept)


@pytest.mark.parametrize(("categories", "subset", "limit"), [
    (CATS, None, None), (CATS, "ade20k", None), (CATS, None, 2), (("texture",), None, None),
    (("object", "scene"), "img", 3), (("part",), "zzz", None)])
def test_read_index_matches_old_parse(tmp_path: Path, categories: tuple[str, ...],
                                      subset: str | None, limit: int | None) -> None:
    """Every filter combination gives the rows, in order, that the old parse gave."""
    text = "\n".join([HEADER, *ROWS]) + "\n"
    (tmp_path / "index.csv").write_text(text, encoding="utf-8")
    table, shapes = read_index(tmp_path / "index.csv", categories, subset, limit)
    want = old_parse(text, categories, subset, limit)
    assert tuple(table) == want and len(table) == len(want)
    assert [table[i] for i in range(-len(want), 0)] == list(want)
    assert shapes == ({(112, 112)} if want else set())


@pytest.mark.parametrize("ending", ["\r\n", "\n"])
def test_line_endings_and_quoted_cells(tmp_path: Path, ending: str) -> None:
    """CRLF files, a quoted cell with a comma and no final newline parse as before."""
    rows = [*ROWS[:2], '"q/a,b.jpg",train,5,6,112,112,"x.png;3",,,,,']
    text = ending.join([HEADER, *rows])
    (tmp_path / "index.csv").write_bytes(text.encode("utf-8"))
    table, _ = read_index(tmp_path / "index.csv", CATS)
    assert tuple(table) == old_parse(text, CATS, None, None) and table[2].image == "q/a,b.jpg"


def test_generated_dataset_samples_equal_old_parse(tmp_path: Path) -> None:
    """A generated dataset's samples equal the old parse, also after a pickle round trip."""
    root = generate_dataset(tmp_path / "ds", 30, seed=3, image_size=32, mask_size=8)
    ds = BrodenDataset(DatasetSpec(root=str(root)))
    want = old_parse((root / "index.csv").read_text(encoding="utf-8"), CATS, None, None)
    assert ds.samples == want and pickle.loads(pickle.dumps(ds.samples)) == want
    assert [ds.samples.image(i) for i in range(len(want))] == [s.image for s in want]
    assert ds.samples[3:7] == want[3:7]


def test_table_is_compact(tmp_path: Path) -> None:
    """The table holds a few bytes per row beyond the path bytes (no Python object per row)."""
    builder = SampleTableBuilder(CATS)
    for i in range(1000):
        builder.add(f"x/{i:06d}.jpg", (224, 224), [("color", f"x/{i:06d}_c.png")],
                    [("scene", 7)])
    table = builder.build()
    path_bytes = 1000 * (len("x/000000.jpg") + len("x/000000_c.png"))
    assert len(table) == 1000 and table.nbytes - path_bytes < 1000 * 80
    assert table[999] == Sample("x/000999.jpg", (224, 224), (("color", "x/000999_c.png"),),
                                (("scene", 7),))
    with pytest.raises(IndexError):
        table[1000]
