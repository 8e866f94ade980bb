"""A compact, columnar table of samples: a few numpy arrays instead of one object per row.

Broden's ``index.csv`` has 63,305 rows and COCO 118k images; one :class:`Sample` per row (a
frozen dataclass holding tuples of tuples of strings) costs ~1.8 KB per image in every process
that opens the dataset, and it is pickled to every worker. :class:`SampleTable` keeps the same
information in CSR form (about 40 bytes per image plus the path bytes) and builds a
:class:`Sample` only when one is indexed, so ``table[i]`` equals the old ``samples[i]``.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from ray_dissect.datasets.base import Sample


class SampleTable(Sequence[Sample]):
    """Samples as columns; indexing builds the :class:`Sample` of that row.

    Attributes:
        categories: category names that ``layer_cat`` and ``label_cat`` index.
        text: (B,) uint8 UTF-8 bytes of every path, concatenated.
        image_span: (N, 2) int64 [start, stop) of each image path in ``text``.
        image_size: (N, 2) int32 (ih, iw).
        layer_indptr: (N + 1,) int64 CSR pointers into the layer columns.
        layer_cat: (L,) int8 category of each pixel layer; layer_span: (L, 2) int64 its path.
        label_indptr: (N + 1,) int64 CSR pointers into the whole-image label columns.
        label_cat: (G,) int8 category of each whole-image label; label_num: (G,) int32 number.
    """

    def __init__(self, categories: Sequence[str], text: np.ndarray, image_span: np.ndarray,
                 image_size: np.ndarray, layer_indptr: np.ndarray, layer_cat: np.ndarray,
                 layer_span: np.ndarray, label_indptr: np.ndarray, label_cat: np.ndarray,
                 label_num: np.ndarray) -> None:
        self.categories = tuple(categories)
        self.text, self.image_span, self.image_size = text, image_span, image_size
        self.layer_indptr, self.layer_cat, self.layer_span = layer_indptr, layer_cat, layer_span
        self.label_indptr, self.label_cat, self.label_num = label_indptr, label_cat, label_num

    def __len__(self) -> int:
        return len(self.image_span)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Sample, ...]: ...

    def __getitem__(self, index: int | slice) -> Sample | tuple[Sample, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        i = range(len(self))[index]  # IndexError and negative indices as a tuple's
        return Sample(self._text(self.image_span[i]),
                      (int(self.image_size[i, 0]), int(self.image_size[i, 1])),
                      self._layers(i), self._labels(i))

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or len(other) != len(self):
            return False
        return all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def image(self, index: int) -> str:
        """The image path of row ``index`` (without building the whole :class:`Sample`)."""
        return self._text(self.image_span[range(len(self))[index]])

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays."""
        return sum(a.nbytes for a in (self.text, self.image_span, self.image_size,
                                      self.layer_indptr, self.layer_cat, self.layer_span,
                                      self.label_indptr, self.label_cat, self.label_num))

    def _text(self, span: np.ndarray) -> str:
        return self.text[int(span[0]):int(span[1])].tobytes().decode("utf-8")

    def _layers(self, i: int) -> tuple[tuple[str, str], ...]:
        lo, hi = int(self.layer_indptr[i]), int(self.layer_indptr[i + 1])
        return tuple((self.categories[int(self.layer_cat[k])], self._text(self.layer_span[k]))
                     for k in range(lo, hi))

    def _labels(self, i: int) -> tuple[tuple[str, int], ...]:
        lo, hi = int(self.label_indptr[i]), int(self.label_indptr[i + 1])
        return tuple((self.categories[int(self.label_cat[k])], int(self.label_num[k]))
                     for k in range(lo, hi))


class SampleTableBuilder:
    """Append samples one at a time into growing flat buffers, then :meth:`build` the table.

    The buffers are ``array.array`` and ``bytearray`` (machine-sized items, no Python object
    per value), so building a table of N rows never holds N Python objects at once.
    """

    def __init__(self, categories: Sequence[str]) -> None:
        self.categories = tuple(categories)
        self._cat = {c: k for k, c in enumerate(self.categories)}
        self._text = bytearray()
        self._image_span, self._size = array("q"), array("l")
        self._layer_ptr, self._layer_cat, self._layer_span = array("q", [0]), array("b"), array("q")
        self._label_ptr, self._label_cat, self._label_num = array("q", [0]), array("b"), array("l")

    def __len__(self) -> int:
        return len(self._size) // 2

    def add(self, image: str, image_size: tuple[int, int], pixel_layers: Sequence[tuple[str, str]],
            image_labels: Sequence[tuple[str, int]]) -> None:
        """Append one row (the fields of a :class:`Sample`); categories must be known."""
        self._image_span.extend(self._put(image))
        self._size.extend(image_size)
        for cat, name in pixel_layers:
            self._layer_cat.append(self._cat[cat])
            self._layer_span.extend(self._put(name))
        for cat, number in image_labels:
            self._label_cat.append(self._cat[cat])
            self._label_num.append(number)
        self._layer_ptr.append(len(self._layer_cat))
        self._label_ptr.append(len(self._label_cat))

    def _put(self, text: str) -> tuple[int, int]:
        start = len(self._text)
        self._text += text.encode("utf-8")
        return start, len(self._text)

    def build(self) -> SampleTable:
        """The table of the added rows, in the order added."""
        return SampleTable(
            self.categories, np.frombuffer(bytes(self._text), dtype=np.uint8),
            _arr(self._image_span, np.int64).reshape(-1, 2),
            _arr(self._size, np.int32).reshape(-1, 2), _arr(self._layer_ptr, np.int64),
            _arr(self._layer_cat, np.int8), _arr(self._layer_span, np.int64).reshape(-1, 2),
            _arr(self._label_ptr, np.int64), _arr(self._label_cat, np.int8),
            _arr(self._label_num, np.int32))


def _arr(buf: array, dtype: type[np.generic]) -> np.ndarray:
    return np.frombuffer(buf, dtype=buf.typecode).astype(dtype) if len(buf) else \
        np.zeros(0, dtype=dtype)

