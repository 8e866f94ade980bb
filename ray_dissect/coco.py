"""Stage 1 for COCO: a concept dataset read from COCO instance (and stuff) annotations.

Concepts (global label numbers 1..L, 0 = unlabeled), numbered in this order:

- ``object``: every category of the instances JSON, by ascending COCO category id;
- ``stuff``: every category of the optional stuff JSON (same format, same images), by id;
  a name already used by an object gets the suffix ``" (stuff)"``;
- ``supercategory``: every distinct ``supercategory`` value, in order of first appearance
  along the labels above; its mask is the union of its categories' masks. A name already used
  by a category gets the suffix ``" (super)"`` (COCO's ``person`` -> ``"person (super)"``).

Numbers do not depend on ``categories``: that filter only decides which labels are painted and
which categories the vocabulary lists (like the Broden reader). Samples are the images of the
instances JSON by ascending image id (``limit`` keeps the first N); images without any
annotation are kept as valid images with no labels. There are no whole-image labels.

Masks are built on demand, one image per :meth:`CocoDataset.read_labels` call: every
annotation (polygons, uncompressed or compressed RLE, crowd or not) is rasterised at the
image's native size exactly as ``pycocotools.coco.COCO.annToMask`` does, then sampled to
``mask_size`` x ``mask_size`` by nearest neighbour at pixel centres: output pixel ``(i, j)``
takes source pixel ``((2i + 1) * h // (2S), (2j + 1) * w // (2S))`` for an h x w image and
S = ``mask_size`` (the source pixel containing the output pixel's centre). Sampling commutes
with union, so a category's mask is the union of its sampled annotations.

The JSON files are parsed once per process and kept (a small per-process cache keyed by path,
size and mtime): COCO train2017 instances is ~450 MB of JSON and several GB as Python objects,
so every process that opens the dataset pays that memory once.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ray_dissect.dataset import BadSampleError, Sample, Vocabulary, read_image_rgb
from ray_dissect.errors import DatasetError
from ray_dissect.spec import CocoDatasetSpec

Segmentation = list[list[float]] | dict[str, Any]


@dataclass(frozen=True)
class CocoFile:
    """The parts of one COCO JSON the reader keeps.

    Attributes:
        images: image id -> (file_name, height, width), ascending ids.
        categories: (category id, name, supercategory or "") by ascending id.
        annotations: image id -> ((category id, segmentation), ...) in file order.
    """

    images: dict[int, tuple[str, int, int]]
    categories: tuple[tuple[int, str, str], ...]
    annotations: dict[int, tuple[tuple[int, Segmentation], ...]]


def _parse(raw: dict[str, Any]) -> CocoFile:
    images = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"]))
              for im in sorted(raw["images"], key=lambda im: int(im["id"]))}
    cats = tuple(sorted((int(c["id"]), str(c["name"]), str(c.get("supercategory") or ""))
                        for c in raw["categories"]))
    known = {c[0] for c in cats}
    if len(known) != len(cats):
        raise ValueError("duplicate category ids")
    grouped: dict[int, list[tuple[int, Segmentation]]] = {}
    for ann in raw.get("annotations", []):
        if int(ann["category_id"]) not in known:
            raise KeyError(f"annotation {ann.get('id')} has unknown category_id "
                           f"{ann['category_id']}")
        grouped.setdefault(int(ann["image_id"]), []).append(
            (int(ann["category_id"]), ann["segmentation"]))
    return CocoFile(images, cats, {k: tuple(v) for k, v in grouped.items()})


@lru_cache(maxsize=2)
def _load_cached(path: str, size: int, mtime_ns: int) -> CocoFile:
    del size, mtime_ns  # cache key only: a rewritten file is read again
    try:
        with open(path, "rb") as handle:
            raw = json.load(handle)
    except OSError as err:
        raise DatasetError(f"cannot read COCO JSON: {err.strerror}", given=path,
                           expected="a readable annotations file", hint="check the path"
                           ) from None
    except ValueError as err:
        raise DatasetError(f"COCO JSON is not valid JSON: {err}", given=path,
                           expected="a COCO annotations file", hint="re-download the file"
                           ) from None
    try:
        return _parse(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"malformed COCO JSON: {err}", given=path,
                           expected="a COCO annotations file with images, categories and "
                           "annotations", hint="check the file is an instances/stuff JSON"
                           ) from None


def load_coco(path: str | Path, what: str) -> CocoFile:
    """Parse (or fetch from the per-process cache) the COCO JSON at ``path``.

    Raises:
        DatasetError: the file is missing, unreadable or not COCO JSON.
    """
    try:
        stat = os.stat(path)
    except OSError:
        raise DatasetError(f"dataset.{what} file not found", given=str(path),
                           expected="a COCO annotations JSON",
                           hint=f"set dataset.{what} to e.g. annotations/instances_val2017.json"
                           ) from None
    return _load_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def nearest_indices(size: int, out: int) -> np.ndarray:
    """(out,) int64 source index of each output pixel: ``(2i + 1) * size // (2 * out)``."""
    return (2 * np.arange(out, dtype=np.int64) + 1) * size // (2 * out)


def rasterise(segm: Segmentation, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 0/1 mask of one annotation, as ``COCO.annToMask`` computes it.

    Raises:
        BadSampleError: the segmentation cannot be decoded or has another size.
    """
    from pycocotools import mask as mask_utils

    try:
        with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's copy= warning
            warnings.simplefilter("ignore", DeprecationWarning)
            if isinstance(segm, list):  # polygons of one object: merged into one RLE
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
            elif isinstance(segm["counts"], list):  # uncompressed RLE (crowd)
                rle = mask_utils.frPyObjects(segm, height, width)
            else:  # compressed RLE
                rle = segm
            mask = mask_utils.decode(rle)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise BadSampleError(f"undecodable segmentation: {err}") from None
    if mask.shape != (height, width):
        raise BadSampleError(f"segmentation is {mask.shape[1]}x{mask.shape[0]}, "
                             f"image is {width}x{height}")
    return mask


def paint_layers(masks: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Greedy layering: each label, ascending, goes to the lowest layer free at each pixel.

    Args:
        masks: label number -> (sh, sw) bool mask.
        shape: (sh, sw).

    Returns:
        (K, sh, sw) int32, K = the largest number of labels on one pixel; the union over
        layers of ``pixel == n`` is ``masks[n]``.
    """
    depth = np.zeros(shape, dtype=np.int64)
    for mask in masks.values():
        depth += mask
    pixel = np.zeros((int(depth.max(initial=0)), *shape), dtype=np.int32)
    depth[:] = 0
    for label in sorted(masks):
        rows, cols = np.nonzero(masks[label])
        pixel[depth[rows, cols], rows, cols] = label
        depth[rows, cols] += 1
    return pixel


def _unique_name(name: str, taken: set[str], suffix: str) -> str:
    out = name if name not in taken else f"{name} ({suffix})"
    if out in taken:
        raise DatasetError("duplicate concept name in the COCO categories", given=name,
                           expected="distinct category names", hint="rename the category")
    taken.add(out)
    return out


class CocoDataset:
    """A COCO concept dataset with the interface of :class:`ray_dissect.dataset.BrodenDataset`.

    Attributes:
        root: the image directory (``file_name`` is relative to it).
        samples: one :class:`Sample` per kept image, ascending image id (no layers listed).
        image_ids: (N,) COCO image id of each sample.
        vocab: the concept vocabulary (see the module docstring for numbering).
        mask_shape: (mask_size, mask_size).
    """

    def __init__(self, spec: CocoDatasetSpec) -> None:
        self.root = Path(spec.root)
        if not self.root.is_dir():
            raise DatasetError("dataset.root is not a directory", given=spec.root,
                               expected="the COCO image directory (e.g. val2017/)",
                               hint="point dataset.root at the folder holding the images")
        files = [("object", load_coco(spec.annotations, "annotations"))]
        if spec.stuff is not None:
            files.append(("stuff", load_coco(spec.stuff, "stuff")))
        self._files = [f for _, f in files]
        self._build_vocabulary(files, spec.categories)
        instances = files[0][1]
        ids = list(instances.images)[: spec.limit]
        if not ids:
            raise DatasetError("the COCO annotations list no images", given=spec.annotations,
                               expected="at least one entry in 'images'")
        self.image_ids = tuple(ids)
        self.samples = tuple(Sample(instances.images[i][0], instances.images[i][1:], (), ())
                             for i in ids)
        self.mask_shape: tuple[int, int] = (spec.mask_size, spec.mask_size)

    def _build_vocabulary(self, files: list[tuple[str, CocoFile]],
                          categories: tuple[str, ...] | None) -> None:
        all_cats = [kind for kind, _ in files] + ["supercategory"]
        cats = list(categories) if categories is not None else all_cats
        unknown = sorted(set(cats) - set(all_cats))
        if unknown:
            raise DatasetError(f"unknown categories {unknown}", expected=f"some of {all_cats}",
                               hint="fix dataset.categories (set dataset.stuff for 'stuff')")
        names, owner = [""], [""]
        taken: set[str] = set()
        self._label_of: list[dict[int, int]] = []  # per file: category id -> label number
        for kind, coco in files:
            self._label_of.append({})
            for cid, name, _ in coco.categories:
                self._label_of[-1][cid] = len(names)
                names.append(_unique_name(name, taken, kind))
                owner.append(kind)
        supers: dict[str, int] = {}
        self._super = np.zeros(len(names), dtype=np.int64)  # label -> supercategory label
        for (_, coco), labels in zip(files, self._label_of, strict=True):
            for cid, _, sup in coco.categories:
                if sup and sup not in supers:
                    supers[sup] = len(names)
                    names.append(_unique_name(sup, taken, "super"))
                    owner.append("supercategory")
                self._super[labels[cid]] = supers.get(sup, 0)
        membership = np.array([[o == c for c in cats] for o in owner], dtype=bool)
        membership = membership.reshape(len(names), len(cats))
        primary = np.where(membership.any(axis=1), membership.argmax(axis=1), -1)
        self._keep = membership.any(axis=1)
        self.vocab = Vocabulary(tuple(names), tuple(cats), membership, primary.astype(np.int64))

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as (h, w, 3) uint8 RGB; raise :class:`BadSampleError`."""
        name = self.samples[index].image
        return read_image_rgb(self.root / name, name)

    def label_masks(self, index: int) -> dict[int, np.ndarray]:
        """Label number -> (S, S) bool mask of every kept label present in image ``index``.

        Raises:
            BadSampleError: an annotation cannot be rasterised at the image's size.
        """
        sample = self.samples[index]
        h, w = sample.image_size
        rows = nearest_indices(h, self.mask_shape[0])[:, None]
        cols = nearest_indices(w, self.mask_shape[1])[None, :]
        masks: dict[int, np.ndarray] = {}
        for coco, labels in zip(self._files, self._label_of, strict=True):
            for cid, segm in coco.annotations.get(self.image_ids[index], ()):
                try:
                    small = rasterise(segm, h, w)[rows, cols].astype(bool)
                except BadSampleError as err:
                    raise BadSampleError(f"{sample.image}: {err}") from None
                for label in (labels[cid], int(self._super[labels[cid]])):
                    if label and self._keep[label]:
                        masks[label] = masks[label] | small if label in masks else small
        return masks

    def read_labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise the annotations of image ``index`` at the mask size.

        Returns:
            pixel: (K, S, S) int32 label layers (0 = none) from :func:`paint_layers`; K is the
                largest number of labels on one pixel (0 for an image without annotations).
            whole: (0,) int32, COCO has no whole-image labels.
        Raises:
            BadSampleError: an annotation cannot be rasterised at the image's size.
        """
        pixel = paint_layers(self.label_masks(index), self.mask_shape)
        return pixel, np.zeros(0, dtype=np.int32)
