"""The dataset formats, by the ``format`` field of ``dataset:`` in the job spec.

A new format is a spec class in :mod:`ray_dissect.spec.dataset` (with its ``format`` tag), a
reader module here satisfying :class:`~ray_dissect.datasets.base.ConceptDataset` (or only
:class:`~ray_dissect.datasets.base.ImageDataset`, for images without concept labels: ``images``),
and one entry in :data:`FORMATS`. Readers load lazily, so opening a Broden dataset imports no
COCO code.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.errors import SpecError

FORMATS: dict[str, str] = {
    "broden": "ray_dissect.datasets.broden:BrodenDataset",
    "coco": "ray_dissect.datasets.coco:CocoDataset",
    "images": "ray_dissect.datasets.images:ImageFolderDataset",
    "pascal_part": "ray_dissect.datasets.pascal_part_reader:PascalPartDataset",
}


def open_dataset(spec: Any) -> ImageDataset:
    """Open the dataset a ``dataset:`` sub-spec names, with the reader of its ``format``.

    The result is a :class:`ConceptDataset` for every format but ``images`` (check with
    ``isinstance``, or use :func:`open_concept_dataset`).

    Raises:
        SpecError: the format has no reader.
        DatasetError: the reader's own checks (missing files, malformed index).
    """
    target = FORMATS.get(spec.format)
    if target is None:
        raise SpecError("unknown dataset format", given=spec.format,
                        expected=f"one of {sorted(FORMATS)}", hint="fix dataset.format")
    module, _, name = target.partition(":")
    reader = getattr(importlib.import_module(module), name)
    dataset: ImageDataset = reader(spec)
    return dataset


def open_concept_dataset(spec: Any) -> ConceptDataset:
    """:func:`open_dataset` for a stage that needs concept labels.

    Raises:
        SpecError: the format has no concept labels (``images``), besides open_dataset's.
    """
    dataset = open_dataset(spec)
    if not isinstance(dataset, ConceptDataset):
        raise SpecError(f"dataset format {spec.format!r} has no concept labels",
                        expected="a concept dataset (format broden, coco or pascal_part)",
                        hint="fix dataset.format")
    return dataset
