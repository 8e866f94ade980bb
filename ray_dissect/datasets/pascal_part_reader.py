"""PASCAL-Part as a concept dataset (``format: pascal_part``, issue 12).

**Samples.** Every ``<stem>.mat`` directly in ``root`` (PASCAL-Part's ``Annotations_Part/``;
a local path or an fsspec URI, suffix case-insensitive, hidden files skipped) is one sample,
in sorted order; ``limit`` keeps the first N. Its image is ``<stem>.jpg`` in ``images`` (the
VOC ``JPEGImages/`` folder), which is ``samples[i].image``. Annotations are decoded on demand,
one file per :meth:`PascalPartDataset.read_labels` call, by
:mod:`ray_dissect.datasets.pascal_part` (fields read by name, parts grouped by ``PART_MAP``,
later objects occluding earlier ones and their parts).

**Concepts** (global label numbers, 0 = unlabeled), in the order of
:func:`~ray_dissect.datasets.pascal_part.concept_vocabulary`:

- ``object``: the 20 VOC classes, label = ``class_ind`` (1 ``aeroplane`` ... 20
  ``tvmonitor``);
- ``part``: the grouped part names ``PART_NAMES`` (sorted), label = 20 + part id
  (21 ``beak`` ...). Parts are named by the part alone, as in Broden.

Each label belongs to one category, its primary one. ``categories`` keeps some of
``object`` and ``part``: the vocabulary lists only those, and only their layers are returned;
the numbers stay the same.

**Masks.** The object and part maps are drawn at the annotation's size (the image's), then
sampled to ``mask_size`` x ``mask_size`` by nearest neighbour at pixel centres
(:func:`~ray_dissect.datasets.pascal_part.resample`, the rule of ``format: coco``): every
sample shares one ``mask_shape``, and the square matches the model's square resize of the
image. :meth:`~PascalPartDataset.read_labels` returns one layer per kept category (object
layer, part layer) and no whole-image labels.

**Bad samples.** A missing, corrupt or malformed ``.mat`` file is a
:class:`~ray_dissect.datasets.pascal_part.BadAnnotation` (a ``BadSampleError``) from
``read_labels``; a missing or unreadable JPEG a ``BadSampleError`` from ``read_image``. The
stages record either in ``errors.jsonl`` and leave the sample out of every count. Part names
outside ``PART_MAP`` are left out of the part layer (logged at debug level, never guessed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import Sample, Vocabulary, confined, read_image_rgb
from ray_dissect.datasets.pascal_part import (
    PART_NAMES,
    VOC_CLASSES,
    decode,
    read_annotation,
    resample,
)
from ray_dissect.errors import DatasetError
from ray_dissect.spec import PascalPartDatasetSpec
from ray_dissect.storage import AnyPath

CATEGORIES = ("object", "part")
PART_OFFSET = len(VOC_CLASSES)
"""Global label of part id p (1-based index into PART_NAMES) is ``PART_OFFSET + p``."""


def pascal_vocabulary(categories: Sequence[str] | None = None) -> Vocabulary:
    """The vocabulary: label 0 empty, the VOC classes (1-20), then the grouped parts.

    Args:
        categories: the categories to list (some of ``object``, ``part``); None for both.

    Raises:
        DatasetError: an unknown category.
    """
    cats = tuple(categories) if categories is not None else CATEGORIES
    unknown = sorted(set(cats) - set(CATEGORIES))
    if unknown:
        raise DatasetError(f"unknown categories {unknown}", expected=f"some of {list(CATEGORIES)}",
                           hint="fix dataset.categories in the job spec")
    names = ("", *VOC_CLASSES, *PART_NAMES)
    owner = ["", *["object"] * len(VOC_CLASSES), *["part"] * len(PART_NAMES)]
    membership = np.array([[o == c for c in cats] for o in owner], dtype=bool)
    membership = membership.reshape(len(names), len(cats))
    primary = np.where(membership.any(axis=1), membership.argmax(axis=1), -1)
    return Vocabulary(names, cats, membership, primary.astype(np.int64))


def _directory(path: str, field: str, expected: str) -> AnyPath:
    where = storage.location(path)
    if not where.is_dir():
        raise DatasetError(f"dataset.{field} is not a directory", given=path, expected=expected,
                           hint=f"point dataset.{field} at PASCAL-Part's {expected}")
    return where


def annotation_files(root: AnyPath) -> list[str]:
    """Sorted names of the ``.mat`` files directly in ``root`` (suffix case-insensitive)."""
    return [p for p in storage.list_files(root) if "/" not in p and p.lower().endswith(".mat")]


class PascalPartDataset:
    """PASCAL-Part objects and parts (a :class:`~ray_dissect.datasets.base.ConceptDataset`).

    Attributes:
        root: the annotation folder.
        images: the JPEG folder (``samples[i].image`` is relative to it).
        files: the ``.mat`` file name of each sample.
        samples: one :class:`Sample` per annotation file, sorted (``image_size`` (0, 0): not
            listed; no layers listed).
        vocab: the concept vocabulary (see the module docstring for numbering).
        mask_shape: (mask_size, mask_size).
    """

    def __init__(self, spec: PascalPartDatasetSpec) -> None:
        self.root = _directory(spec.root, "root", "Annotations_Part/ (the .mat files)")
        self.images = _directory(spec.images, "images", "JPEGImages/ (the VOC images)")
        self.follow_symlinks = spec.follow_symlinks
        self.vocab = pascal_vocabulary(spec.categories)
        files = annotation_files(self.root)
        if not files:
            raise DatasetError("dataset.root holds no .mat annotation files", given=spec.root,
                               expected="PASCAL-Part's Annotations_Part/ folder",
                               hint="point dataset.root at the folder of <image>.mat files")
        self.files = tuple(files[: spec.limit])
        self.samples = tuple(Sample(f"{name[:-4]}.jpg", (0, 0), (), ()) for name in self.files)
        self.mask_shape: tuple[int, int] = (spec.mask_size, spec.mask_size)

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as (h, w, 3) uint8 RGB; raise :class:`BadSampleError`."""
        name = self.samples[index].image
        return read_image_rgb(confined(self.images, name, self.follow_symlinks), name)

    def read_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode and sample the annotation of image ``index``.

        Returns:
            pixel: (n_categories, sh, sw) int32 global label numbers (0 = none), one layer
                per kept category in ``vocab.categories`` order (object: VOC class; part:
                ``PART_OFFSET`` + part id).
            whole: (0,) int32, PASCAL-Part has no whole-image labels.
        Raises:
            BadAnnotation: the ``.mat`` file is missing, corrupt or malformed.
        """
        path = confined(self.root, self.files[index], self.follow_symlinks)
        masks = decode(read_annotation(path))
        layers = {"object": masks.object,
                  "part": np.where(masks.part > 0, masks.part + PART_OFFSET, 0)}
        pixel = np.stack([resample(layers[c], self.mask_shape) for c in self.vocab.categories])
        return pixel.astype(np.int32), np.zeros(0, dtype=np.int32)
