"""The Broden on-disk format (``format: broden``).

Reads real Broden (``broden1_224``/``broden1_227``) unchanged and the generated datasets of
:mod:`ray_dissect.datasets.synthetic.generate`:

- ``index.csv``: ``image,split,ih,iw,sh,sw,<category>...``; a category cell is empty or a
  ``;``-separated list of PNG layers (paths under ``images/``) and/or whole-image labels
  (decimal global label numbers).
- ``label.csv``: ``number,name,category,frequency,coverage,syns`` (0 is implicit and empty).
- ``category.csv`` and ``c_<category>.csv`` (``code,number,name,frequency,coverage``); the
  *primary* category of a label is the one whose c-file gives it the largest coverage (ties go
  to the later category), as NetDissect-Lite does.
- PNG layers decode to global label numbers as ``R + 256 * G``; 0 means unlabeled.

The split column is ignored (as by every reference implementation).
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ray_dissect import storage
from ray_dissect.datasets.base import (
    BadSampleError,
    Vocabulary,
    confined,
    decoding,
    read_file_bytes,
    read_image_rgb,
)
from ray_dissect.datasets.sample_table import SampleTable, SampleTableBuilder
from ray_dissect.errors import DatasetError
from ray_dissect.spec import DatasetSpec
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)

FIXED_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


def _read_text(path: AnyPath) -> str:
    try:
        return storage.read_text(path)
    except FileNotFoundError:
        raise DatasetError(f"missing {path.name} in the dataset", given=str(path.parent),
                           expected="a Broden-format directory",
                           hint="run `ray-dissect make-dataset DIR` for a generated one") from None


def _read_csv(path: AnyPath) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_read_text(path), newline="")))


def _parse_category_field(text: str) -> dict[str, int]:
    """``"object(12);part(3)"`` -> {"object": 12, "part": 3}."""
    out: dict[str, int] = {}
    for item in filter(None, text.split(";")):
        name, _, count = item.partition("(")
        out[name.strip()] = int(count.rstrip(")") or 0)
    return out


def read_vocabulary(root: AnyPath, categories: Sequence[str] | None = None) -> Vocabulary:
    """Read ``label.csv``, ``category.csv`` and the ``c_*.csv`` files of a Broden directory."""
    labels = _read_csv(root / "label.csv")
    all_cats = [row["name"] for row in _read_csv(root / "category.csv")]
    cats = list(categories) if categories is not None else all_cats
    unknown = sorted(set(cats) - set(all_cats))
    if unknown:
        raise DatasetError(f"unknown categories {unknown}", expected=f"some of {all_cats}",
                           hint="fix dataset.categories in the job spec")
    size = max((int(r["number"]) for r in labels), default=0) + 1
    names = [""] * size
    membership = np.zeros((size, len(cats)), dtype=bool)
    coverage = np.full((size, len(cats)), -np.inf)
    for row in labels:
        number = int(row["number"])
        names[number] = row["name"]
        for cat, count in _parse_category_field(row["category"]).items():
            if cat in cats:
                membership[number, cats.index(cat)] = True
                coverage[number, cats.index(cat)] = count  # fallback when no c-file
    for ci, cat in enumerate(cats):
        path = root / f"c_{cat}.csv"
        if path.exists():
            coverage[:, ci] = np.where(membership[:, ci], -np.inf, coverage[:, ci])
            for row in _read_csv(path):
                number = int(row["number"])
                membership[number, ci] = True
                coverage[number, ci] = float(row.get("coverage") or 0.0)
    # argmax with ties to the later category: reverse, argmax, map back.
    rev = coverage[:, ::-1]
    primary = len(cats) - 1 - np.argmax(rev, axis=1)
    primary = np.where(membership.any(axis=1), primary, -1).astype(np.int64)
    primary[0] = -1
    return Vocabulary(tuple(names), tuple(cats), membership, primary)


def _split_cells(row: Sequence[str], columns: Sequence[tuple[str, int]]
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, int]]]:
    """The (category, PNG) layers and (category, number) labels of one ``index.csv`` row."""
    pixel: list[tuple[str, str]] = []
    whole: list[tuple[str, int]] = []
    for cat, col in columns:
        cell = row[col] if 0 <= col < len(row) else ""
        for item in filter(None, cell.split(";")):
            item = item.strip()
            if item.isdigit():
                whole.append((cat, int(item)))
            elif item:
                pixel.append((cat, item))
    return pixel, whole


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text``, endings kept, one at a time (``io.StringIO`` would copy the
    whole text into a 4-byte-per-character buffer: ~4x the file at Broden's size)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def read_index(path: AnyPath, categories: Sequence[str], subset: str | None = None,
               limit: int | None = None) -> tuple[SampleTable, set[tuple[int, int]]]:
    """Stream ``index.csv`` into a :class:`SampleTable`, filtering as it goes.

    Rows are kept when their image path contains ``subset`` (if given) and they have a layer
    or label in ``categories``; at most ``limit`` rows are kept. No Python object per row
    outlives its line, so the peak is the file's text plus the compact table.

    Returns:
        The kept rows, and the set of (sh, sw) segmentation sizes among them.
    """
    reader = csv.reader(_lines(_read_text(path)))
    header = next(reader, [])
    rows = filter(None, reader)  # csv.DictReader skips blank lines too
    first = next(rows, None)
    if first is None:
        return SampleTableBuilder(categories).build(), set()
    missing = [c for c in FIXED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(f"index.csv lacks columns {missing}",
                           expected=",".join(FIXED_COLUMNS) + ",<categories>")
    return _collect_rows(itertools.chain([first], rows), header, categories, subset, limit)


def _collect_rows(rows: Iterable[list[str]], header: list[str], categories: Sequence[str],
                  subset: str | None, limit: int | None
                  ) -> tuple[SampleTable, set[tuple[int, int]]]:
    col = {name: k for k, name in enumerate(header)}
    columns = [(cat, col.get(cat, -1)) for cat in categories]
    image, ih, iw, sh, sw = (col[c] for c in ("image", "ih", "iw", "sh", "sw"))
    table, shapes = SampleTableBuilder(categories), set()
    for row in rows:
        if limit is not None and len(table) >= limit:
            break
        if subset and subset not in row[image]:
            continue
        pixel, whole = _split_cells(row, columns)
        if pixel or whole:
            table.add(row[image], (int(row[ih]), int(row[iw])), pixel, whole)
            shapes.add((int(row[sh]), int(row[sw])))
    return table.build(), shapes


class BrodenDataset:
    """A Broden-format concept dataset, filtered by a :class:`DatasetSpec`.

    Attributes:
        root: the dataset directory.
        samples: the kept index rows, in index order, as a compact :class:`SampleTable`
            (columns of arrays; ``samples[i]`` builds row i's :class:`Sample`).
        vocab: the concept vocabulary.
        mask_shape: (sh, sw), the segmentation size shared by every row.
    """

    def __init__(self, spec: DatasetSpec) -> None:
        self.root = storage.location(spec.root)
        self.follow_symlinks = spec.follow_symlinks
        self._images = self.root / "images"
        self._resolved: dict[str, str] = {}  # directories resolved by confined()
        if not self.root.is_dir():
            raise DatasetError("dataset root is not a directory", given=spec.root,
                               expected="a Broden-format directory",
                               hint="run `ray-dissect make-dataset DIR` to generate one")
        self.vocab = read_vocabulary(self.root, spec.categories)
        self.samples, shapes = read_index(self.root / "index.csv", self.vocab.categories,
                                          spec.subset, spec.limit)
        if not self.samples:
            raise DatasetError("no index rows left after filtering", given=spec.subset,
                               hint="check dataset.subset, categories and limit")
        if len(shapes) != 1:
            raise DatasetError("index.csv mixes segmentation sizes", given=sorted(shapes),
                               expected="one (sh, sw) for every row",
                               hint="use dataset.subset to select rows of one size")
        self.mask_shape: tuple[int, int] = shapes.pop()

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as (ih, iw, 3) uint8 RGB; raise :class:`BadSampleError`."""
        name = self.samples.image(index)
        return read_image_rgb(self._file(name), name)

    def read_image_bytes(self, index: int) -> bytes:
        """The encoded file of image ``index``; raise :class:`BadSampleError`."""
        name = self.samples.image(index)
        return read_file_bytes(self._file(name), name)

    def _file(self, name: str) -> AnyPath:
        """``images/NAME``, confined to the dataset's ``images/`` (:func:`confined`)."""
        return confined(self._images, name, self.follow_symlinks, self._resolved)

    def _read_layer(self, name: str, out: np.ndarray) -> None:
        """Decode one mask file's label numbers, red + 256 x green, into ``out`` (sh, sw)
        int32 (an RGB file is read as it is, other modes converted to RGB first).

        PIL writes the pixels as RGBX, so each pixel's four bytes, read as a little-endian
        uint32, are its label number in the low 16 bits: one masking pass, no per-channel
        arithmetic."""
        path = self._file(name)
        with decoding(f"mask {name}"), Image.open(storage.readable(path)) as img:
            img.load()
            size = img.size
            raw = (img if img.mode == "RGB" else img.convert("RGB")).tobytes("raw", "RGBX")
        if size[::-1] != self.mask_shape:
            raise BadSampleError(
                f"mask {name} is {size[0]}x{size[1]}, expected "
                f"{self.mask_shape[1]}x{self.mask_shape[0]}")
        np.bitwise_and(np.frombuffer(raw, dtype="<u4").reshape(self.mask_shape), 0xFFFF,
                       out=out, casting="unsafe")

    def read_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode the label layers of sample ``index``.

        Returns:
            pixel: (n_layers, sh, sw) int32 global label numbers (0 = none); n_layers may be 0.
            whole: (n_whole,) int32 whole-image label numbers.
        Labels outside the vocabulary raise :class:`BadSampleError`.
        """
        sample = self.samples[index]
        pixel = np.empty((len(sample.pixel_layers), *self.mask_shape), dtype=np.int32)
        for k, (_, name) in enumerate(sample.pixel_layers):
            self._read_layer(name, pixel[k])
        whole = np.array([n for _, n in sample.image_labels], dtype=np.int32)
        top = max(int(pixel.max(initial=0)), int(whole.max(initial=0)))
        if top >= self.vocab.size:
            raise BadSampleError(f"label {top} in {sample.image} is not in label.csv")
        return pixel, whole
