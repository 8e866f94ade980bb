"""A folder of images without concept labels (``format: images``).

The images are the files under ``root`` (at any depth, a local path or an fsspec URI,
hidden files and folders skipped) whose name ends in one of the spec's ``extensions``
(case-insensitive), in sorted order of their ``/``-separated paths relative to ``root``;
``limit`` keeps the first N. The first-level subfolders holding images are the classes, by
sorted name (silver-system's ``geo/`` and ``lmk/``, torchvision's ``ImageFolder``): an image
under ``root/<class>/`` at any depth has that class, one directly in ``root`` has none (-1).
The classes are those of the whole folder, before ``limit``, so ``limit`` does not renumber
them.

The reader satisfies :class:`~ray_dissect.datasets.base.ImageDataset` only: it has no
concept vocabulary and no label masks, so it is not a ``ConceptDataset``, and a method that
scores concepts refuses it before any work (:func:`ray_dissect.pipeline.prepare.preflight`).
An unreadable file is a :class:`~ray_dissect.datasets.base.BadSampleError` (recorded and
skipped by the stages that read images).
"""

from __future__ import annotations

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import Sample, confined, read_image_rgb
from ray_dissect.errors import DatasetError
from ray_dissect.spec import ImagesDatasetSpec

NO_CLASS = -1


def image_paths(root: storage.AnyPath, extensions: tuple[str, ...]) -> list[str]:
    """Sorted relative paths of the files under ``root`` whose lower-cased name ends in one of
    ``extensions`` (lower-case, with the dot)."""
    return [p for p in storage.list_files(root) if p.lower().endswith(extensions)]


def class_labels(paths: list[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The classes (sorted first-level folder names) and each path's class index.

    Args:
        paths: ``/``-separated paths relative to the dataset root.

    Returns:
        classes, and labels: (len(paths),) int64 index into classes, -1 for a path without a
        folder.
    """
    folders = [p.split("/", 1)[0] if "/" in p else None for p in paths]
    classes = tuple(sorted({f for f in folders if f is not None}))
    number = {name: i for i, name in enumerate(classes)}
    labels = np.array([NO_CLASS if f is None else number[f] for f in folders], dtype=np.int64)
    return classes, labels


class ImageFolderDataset:
    """The images of a folder, with class labels from its first-level subfolders.

    Attributes:
        root: the folder (``samples[i].image`` is relative to it).
        samples: one :class:`Sample` per image, in sorted path order (``image_size`` (0, 0):
            not listed; no label layers).
        classes: the first-level subfolder names holding images, sorted (may be empty).
        labels: (N,) int64 class index of each sample, -1 for images directly in ``root``.
    """

    def __init__(self, spec: ImagesDatasetSpec) -> None:
        self.root = storage.location(spec.root)
        self.follow_symlinks = spec.follow_symlinks
        if not self.root.is_dir():
            raise DatasetError("dataset.root is not a directory", given=spec.root,
                               expected="a folder of images",
                               hint="point dataset.root at the folder holding the images")
        paths = image_paths(self.root, spec.extensions)
        if not paths:
            raise DatasetError("dataset.root holds no images", given=spec.root,
                               expected=f"files ending in {'/'.join(spec.extensions)} at any "
                                        "depth", hint="check dataset.root and dataset.extensions")
        self.classes, labels = class_labels(paths)
        paths, self.labels = paths[: spec.limit], labels[: spec.limit]
        self.samples = tuple(Sample(p, (0, 0), (), ()) for p in paths)

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as (h, w, 3) uint8 RGB; raise :class:`BadSampleError`."""
        name = self.samples[index].image
        return read_image_rgb(confined(self.root, name, self.follow_symlinks), name)
