"""What every concept dataset offers, and the readers the formats share.

A *concept dataset* is N images, each with concept labels: per-pixel label layers at one
segmentation size (sh, sw) and whole-image labels, numbered globally by a :class:`Vocabulary`.
Readers (one module per ``format``, found through :mod:`ray_dissect.datasets.registry`) satisfy
:class:`ConceptDataset`; an image-only dataset satisfies :class:`ImageDataset`.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from PIL import Image

from ray_dissect import storage
from ray_dissect.errors import DatasetError
from ray_dissect.storage import AnyPath


class BadSampleError(Exception):
    """One sample cannot be used; the reason is recorded and the sample skipped."""


OUTSIDE_ROOT = "outside the dataset root"


def confined(root: AnyPath, name: str, follow_symlinks: bool = False,
             resolved: dict[str, str] | None = None) -> AnyPath:
    """``root / name``, a file a dataset names (image, mask, annotation), if it stays under
    ``root``.

    ``name`` must be relative and must not climb out with ``..``; locally, unless
    ``follow_symlinks`` (``dataset.follow_symlinks: true``), the path with every symlink
    resolved must also lie under the resolved ``root``. The check reads no file, so its error
    is the same whether a file outside the root exists or not. ``resolved`` (a dataset's own
    dict) keeps the resolved directories: a file that is no symlink then costs one ``lstat``
    instead of one per path component.

    Raises:
        BadSampleError: ``"NAME: outside the dataset root"``.
    """
    clean = posixpath.normpath(name.replace("\\", "/")) if name else "."
    if (os.path.isabs(name) or clean.startswith("/") or clean == ".."
            or clean.startswith("../") or "://" in name):
        raise BadSampleError(f"{name}: {OUTSIDE_ROOT}")
    path = root / name
    if follow_symlinks or not storage.is_local(path) or not storage.is_local(root):
        return path
    real_root = _realpath(os.fspath(root), resolved)
    real = _realpath(os.fspath(path), resolved, file=True)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise BadSampleError(f"{name}: {OUTSIDE_ROOT}")
    return path


def _realpath(path: str, resolved: dict[str, str] | None, file: bool = False) -> str:
    """``os.path.realpath(path)``; with ``resolved``, directories are resolved once and a
    ``file`` that is no symlink (nor ``.`` or ``..``) is its resolved directory joined with
    its name (the same path)."""
    if resolved is None:
        return os.path.realpath(path)
    parent, base = os.path.split(path)
    if file and base not in ("", ".", "..") and not os.path.islink(path):
        return os.path.join(_realpath(parent, resolved), base)
    if path not in resolved:
        resolved[path] = os.path.realpath(path)
    return resolved[path]


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Turn any failure of decoding one file into :class:`BadSampleError` (``"unreadable
    WHAT: reason"``): truncated or corrupt data, decompression bombs (PIL's
    ``DecompressionBombError``), ``MemoryError`` and whatever else a decoder raises, so that
    one input never ends a job."""
    try:
        yield
    except BadSampleError:
        raise
    except MemoryError:
        raise BadSampleError(f"unreadable {what}: too large to decode (out of memory)") from None
    except Exception as err:  # any decoder failure is this sample's, not the job's
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BadSampleError(f"unreadable {what}: {reason}") from None


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of a dataset (for Broden, one row of ``index.csv`` after category filtering).

    Attributes:
        image: path of the image in the dataset (for Broden, under ``images/``).
        image_size: (ih, iw) as listed; (0, 0) where the format lists no sizes (``images``,
            ``pascal_part``).
        pixel_layers: (category, PNG path under ``images/``) for each per-pixel layer.
        image_labels: (category, global label number) for each whole-image label.
    """

    image: str
    image_size: tuple[int, int]
    pixel_layers: tuple[tuple[str, str], ...]
    image_labels: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Vocabulary:
    """The concepts of a dataset.

    Attributes:
        names: label name per global number; ``names[0] == ""``.
        categories: category names, in ``category.csv`` order.
        membership: (n_labels + 1, n_categories) bool, label belongs to category.
        primary: (n_labels + 1,) int64 index of the primary category, -1 for label 0.
    """

    names: tuple[str, ...]
    categories: tuple[str, ...]
    membership: np.ndarray
    primary: np.ndarray

    @property
    def size(self) -> int:
        """Number of label slots including the empty label 0."""
        return len(self.names)

    def category_of(self, number: int) -> str:
        """Name of the primary category of a label ("" for label 0)."""
        index = int(self.primary[number])
        return self.categories[index] if index >= 0 else ""


@runtime_checkable
class ImageDataset(Protocol):
    """N images in a fixed order; ``samples[i].image`` names image i (its path in the dataset).

    ``samples`` is any sequence of :class:`Sample` (a tuple, or a compact
    :class:`~ray_dissect.datasets.sample_table.SampleTable` that builds rows on demand).
    """

    @property
    def samples(self) -> Sequence[Sample]: ...

    def __len__(self) -> int: ...

    def read_image(self, index: int) -> np.ndarray:
        """Image ``index`` as (h, w, 3) uint8 RGB; raise :class:`BadSampleError` if unusable."""
        ...


@runtime_checkable
class ConceptDataset(ImageDataset, Protocol):
    """Images with concept labels at one segmentation size ``mask_shape`` = (sh, sw)."""

    vocab: Vocabulary
    mask_shape: tuple[int, int]

    def read_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Labels of image ``index``: pixel (n_layers, sh, sw) int32 and whole (n,) int32
        global label numbers (0 = none); raise :class:`BadSampleError` if unusable."""
        ...


def read_image_rgb(path: AnyPath, name: str) -> np.ndarray:
    """Decode an image file as (h, w, 3) uint8 RGB.

    Gray, RGBA and palette images are converted; 16-bit images are scaled to 8 bits.

    Raises:
        BadSampleError: missing, empty, truncated, too large (a decompression bomb) or
            otherwise unreadable file (named ``name``).
    """
    with decoding(f"image {name}"), Image.open(storage.readable(path)) as img:
        img.load()
        decoded: Image.Image = img
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float64)
            scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
            decoded = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8))
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def read_file_bytes(path: AnyPath, name: str) -> bytes:
    """The encoded bytes of an image file (to decode elsewhere, e.g. on a GPU).

    Raises:
        BadSampleError: missing, empty or unreadable file (named ``name``).
    """
    try:
        data = storage.read_bytes(path)
    except OSError as err:
        raise BadSampleError(f"unreadable image {name}: {err}") from None
    if not data:
        raise BadSampleError(f"unreadable image {name}: empty file")
    return data


T = TypeVar("T")


def load_annotations(path: str | AnyPath, field: str, parse: Callable[[dict[str, Any]], T],
                     expected: str, example: str) -> T:
    """Parse the JSON annotation file at ``path`` (a path or an fsspec URI) with ``parse``.

    The result is kept per process (keyed by location, size and modification stamp): COCO
    train2017 instances is ~450 MB of JSON and several GB as Python objects, so each process
    that opens the dataset pays that once; a rewritten file is read again.

    Raises:
        DatasetError: naming ``dataset.<field>``: the file is missing, unreadable, not JSON, or
            ``parse`` raises ValueError, KeyError, TypeError or AttributeError.
    """
    where = storage.location(path)
    try:
        version = storage.version_key(where)
    except OSError:
        raise DatasetError(f"dataset.{field} file not found", given=str(path),
                           expected=expected, hint=f"set dataset.{field} to e.g. {example}"
                           ) from None
    key = str(where.resolve()) if storage.is_local(where) else str(where)
    return _parsed(key, version, parse, field, expected)


@lru_cache(maxsize=4)
def _parsed(key: str, version: tuple[int, str], parse: Callable[[dict[str, Any]], T],
            field: str, expected: str) -> T:
    del version  # cache key only
    try:
        raw = json.loads(storage.read_bytes(storage.location(key)))
    except OSError as err:
        raise DatasetError(f"cannot read dataset.{field}: {err.strerror or err}", given=key,
                           expected=expected, hint="check the path") from None
    except ValueError as err:
        raise DatasetError(f"dataset.{field} is not valid JSON: {err}", given=key,
                           expected=expected, hint="re-download the file") from None
    try:
        return parse(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"malformed dataset.{field}: {err}", given=key, expected=expected,
                           hint=f"check that dataset.{field} is the right kind of COCO JSON"
                           ) from None
