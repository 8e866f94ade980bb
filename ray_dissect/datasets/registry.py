"""Opening a dataset by the ``format`` field of ``dataset:`` in the job spec.

The formats are registered in :data:`ray_dissect.spec.dataset.FORMATS` (spec model, reader,
concept labels or not); this module imports a format's reader only when a dataset of that
format is opened, so opening a Broden dataset imports no COCO code. A reader satisfies
:class:`~ray_dissect.datasets.base.ConceptDataset` (or only
:class:`~ray_dissect.datasets.base.ImageDataset`, for a format registered without concept
labels, such as ``images``); the contract tests in ``tests/unit/datasets/contract.py`` check it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.errors import SpecError
from ray_dissect.spec import DatasetFormat, one_of
from ray_dissect.spec import dataset as formats


def concept_formats() -> str:
    """The formats with concept labels as prose, e.g. ``"broden, coco or pascal_part"``."""
    return one_of([fmt.name for fmt in formats.FORMATS if fmt.concepts])


def reader_of(fmt: DatasetFormat) -> type:
    """The reader class of ``fmt`` (its module imported now)."""
    module, _, name = fmt.reader.partition(":")
    reader: type = getattr(importlib.import_module(module), name)
    return reader


def open_dataset(spec: Any) -> ImageDataset:
    """Open the dataset a ``dataset:`` sub-spec names, with the reader of its ``format``.

    The result is a :class:`ConceptDataset` for every format registered with concept labels
    (check with ``isinstance``, or use :func:`open_concept_dataset`).

    Raises:
        SpecError: the format is not registered.
        DatasetError: the reader's own checks (missing files, malformed index).
    """
    fmt = formats.FORMATS_BY_NAME.get(spec.format)
    if fmt is None:
        raise SpecError("unknown dataset format", given=spec.format,
                        expected=f"one of {sorted(formats.FORMATS_BY_NAME)}",
                        hint="fix dataset.format")
    dataset: ImageDataset = reader_of(fmt)(spec)
    return dataset


def open_concept_dataset(spec: Any) -> ConceptDataset:
    """:func:`open_dataset` for a stage that needs concept labels.

    Raises:
        SpecError: the format has no concept labels (``images``), besides open_dataset's.
    """
    dataset = open_dataset(spec)
    if not isinstance(dataset, ConceptDataset):
        raise SpecError(f"dataset format {spec.format!r} has no concept labels",
                        expected=f"a concept dataset (format {concept_formats()})",
                        hint="fix dataset.format")
    return dataset
