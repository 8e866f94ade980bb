"""The dataset formats, by the ``format`` field of ``dataset:`` in the job spec.

A new format is a spec class in :mod:`ray_dissect.spec.dataset` (with its ``format`` tag), a
reader module here satisfying :class:`~ray_dissect.datasets.base.ConceptDataset`, and one
entry in :data:`FORMATS`. Readers load lazily, so opening a Broden dataset imports no COCO code.
"""

from __future__ import annotations

import importlib
from typing import Any

from ray_dissect.datasets.base import ConceptDataset
from ray_dissect.errors import SpecError

FORMATS: dict[str, str] = {
    "broden": "ray_dissect.datasets.broden:BrodenDataset",
    "coco": "ray_dissect.datasets.coco:CocoDataset",
}


def open_dataset(spec: Any) -> ConceptDataset:
    """Open the dataset a ``dataset:`` sub-spec names, with the reader of its ``format``.

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
    dataset: ConceptDataset = reader(spec)
    return dataset
