"""A dataset's concept labels as the network sees its image: cropped like the image when the
job's ``preprocess.resize`` asks for resize-then-centre-crop (:mod:`ray_dissect.models.crop`)."""

from __future__ import annotations

import numpy as np

from ray_dissect.datasets.base import ConceptDataset
from ray_dissect.models.crop import crop_masks
from ray_dissect.spec import PreprocessSpec


def image_size(dataset: ConceptDataset, index: int) -> tuple[int, int]:
    """(H, W) of image ``index``: as the dataset lists it, else read from the image."""
    h, w = dataset.samples[index].image_size
    if h > 0 and w > 0:
        return int(h), int(w)
    shape = dataset.read_image(index).shape
    return int(shape[0]), int(shape[1])


def read_labels(dataset: ConceptDataset, index: int, preprocess: PreprocessSpec | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Labels of image ``index``: pixel (L, sh, sw) int32 (cropped alike when
    ``preprocess.resize`` is set; whole-image labels are kept) and whole (n,) int32.

    Raises:
        BadSampleError: the labels (or, to find its size, the image) cannot be read.
    """
    pixel, whole = dataset.read_labels(index)
    if preprocess is None or preprocess.resize is None:
        return pixel, whole
    size = image_size(dataset, index)
    return crop_masks(pixel, size, preprocess.resize, preprocess.size), whole
