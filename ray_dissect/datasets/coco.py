"""A concept dataset read from COCO instance, stuff and panoptic annotations.

A dataset has an instances JSON (``annotations``), a panoptic JSON (``panoptic``) or both, and
optionally a stuff JSON (``stuff``, same format and images as instances). Concepts (global
label numbers 1..L, 0 = unlabeled), numbered in this order:

- ``object``: every category of the instances JSON, by ascending COCO category id;
- ``stuff``: every category of the optional stuff JSON, by id; a name already used gets the
  suffix ``" (stuff)"``;
- panoptic ``object``: every panoptic category with ``isthing == 1``, by id; then panoptic
  ``stuff``: those with ``isthing == 0``, by id. A name already used gets the suffix
  ``" (panoptic)"`` if ``annotations`` or ``stuff`` is also given (COCO's ``person`` is in
  both files: the panoptic one is ``"person (panoptic)"``), else the suffix of its kind
  (``" (stuff)"`` for a stuff name equal to a thing name);
- ``supercategory``: every distinct ``supercategory`` value, in order of first appearance
  along the labels above (one label per value across all files: an instance ``cat`` and a
  panoptic ``dog`` of ``animal`` share it); its mask is the union of its categories' masks.
  A name already used by a category gets the suffix ``" (super)"`` (``"person (super)"``).

The categories are ``object`` and ``stuff`` (each listed if some file provides it: the
instances or stuff JSON even without categories, the panoptic JSON if it has a category of
that kind), then ``supercategory``. Numbers do not depend on ``categories``: that filter only
decides which labels are painted and which categories the vocabulary lists (like the Broden
reader). Samples are the images of the instances JSON if given, else of the panoptic JSON, by
ascending image id (``limit`` keeps the first N); images without any annotation are kept as
valid images with no labels. There are no whole-image labels.

Masks are built on demand, one image per :meth:`CocoDataset.read_labels` call: every
annotation (polygons, uncompressed or compressed RLE, crowd or not) is rasterised at the
image's native size exactly as ``pycocotools.coco.COCO.annToMask`` does, then sampled to
``mask_size`` x ``mask_size`` by nearest neighbour at pixel centres: output pixel ``(i, j)``
takes source pixel ``((2i + 1) * h // (2S), (2j + 1) * w // (2S))`` for an h x w image and
S = ``mask_size`` (the source pixel containing the output pixel's centre). Sampling commutes
with union, so a category's mask is the union of its sampled annotations.

Panoptic masks: the image's PNG (``file_name`` of its panoptic annotation, in
``panoptic_masks``, by default the panoptic JSON path without ``.json``:
``annotations/panoptic_val2017.json`` -> ``annotations/panoptic_val2017/``) is RGB at the
image's native size (as listed by the JSON the samples come from) and holds the segment id
``R + 256 G + 65536 B`` of each pixel (0 = void). The id image is sampled with the same
nearest rule and each segment's mask is ``ids == segment id``; crowd segments are painted like
the others, ids not listed in ``segments_info`` are unlabeled. The PNG is read only for
images with at least one segment; a missing, unreadable or wrongly sized PNG is a
:class:`BadSampleError` naming it (the sample is recorded and skipped). A segment's unknown
``category_id`` is a :class:`DatasetError` when the JSON is loaded.

The JSON files are parsed once per process and kept (a small per-process cache keyed by
location, size and modification stamp): COCO train2017 instances is ~450 MB of JSON and several
GB as Python objects, so every process that opens the dataset pays that memory once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ray_dissect import storage
from ray_dissect.datasets.base import (
    BadSampleError,
    Sample,
    Vocabulary,
    confined,
    load_annotations,
    read_file_bytes,
    read_image_rgb,
)
from ray_dissect.datasets.coco_panoptic import (
    PanopticFile,
    images_and_categories,
    load_panoptic,
    masks_dir,
    read_segment_ids,
)
from ray_dissect.errors import DatasetError
from ray_dissect.spec import CocoDatasetSpec
from ray_dissect.storage import AnyPath

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
    images, cats = images_and_categories(raw)
    known = {c[0] for c in cats}
    grouped: dict[int, list[tuple[int, Segmentation]]] = {}
    for ann in raw.get("annotations", []):
        if int(ann["category_id"]) not in known:
            raise KeyError(f"annotation {ann.get('id')} has unknown category_id "
                           f"{ann['category_id']}")
        grouped.setdefault(int(ann["image_id"]), []).append(
            (int(ann["category_id"]), ann["segmentation"]))
    return CocoFile(images, cats, {k: tuple(v) for k, v in grouped.items()})


def load_coco(path: str | AnyPath, what: str) -> CocoFile:
    """Parse (or fetch from the per-process cache) the COCO JSON at ``path`` (a local path or
    an fsspec URI); ``what`` is its spec field (``annotations`` or ``stuff``).

    Raises:
        DatasetError: the file is missing, unreadable or not COCO JSON.
    """
    return load_annotations(path, what, _parse, "a COCO instances/stuff JSON with images, "
                            "categories and annotations", "annotations/instances_val2017.json")


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
    """A COCO concept dataset (a :class:`~ray_dissect.datasets.base.ConceptDataset`).

    Attributes:
        root: the image directory (``file_name`` is relative to it).
        samples: one :class:`Sample` per kept image, ascending image id (no layers listed).
        image_ids: (N,) COCO image id of each sample.
        vocab: the concept vocabulary (see the module docstring for numbering).
        mask_shape: (mask_size, mask_size).
    """

    def __init__(self, spec: CocoDatasetSpec) -> None:
        self.root = storage.location(spec.root)
        self.follow_symlinks = spec.follow_symlinks
        if not self.root.is_dir():
            raise DatasetError("dataset.root is not a directory", given=spec.root,
                               expected="the COCO image directory (e.g. val2017/)",
                               hint="point dataset.root at the folder holding the images")
        files = [(kind, load_coco(path, field)) for kind, path, field in
                 (("object", spec.annotations, "annotations"), ("stuff", spec.stuff, "stuff"))
                 if path is not None]
        self._files = [f for _, f in files]
        groups = [(kind, kind, coco.categories) for kind, coco in files]
        self._panoptic: PanopticFile | None = None
        if spec.panoptic is not None:
            self._panoptic = load_panoptic(spec.panoptic)
            self._png_dir = self._panoptic_dir(spec.panoptic, spec.panoptic_masks)
            suffix = "panoptic" if files else ""
            groups += [(kind, suffix or kind, cats) for kind, cats in self._panoptic.groups()]
        label_of = self._build_vocabulary(groups, spec.categories)
        self._label_of = label_of[: len(files)]
        self._panoptic_label = {c: n for labels in label_of[len(files):]
                                for c, n in labels.items()}
        source = files[0][1] if spec.annotations is not None else self._panoptic
        assert source is not None  # the spec needs annotations or panoptic
        ids = list(source.images)[: spec.limit]
        if not ids:
            raise DatasetError("the COCO annotations list no images",
                               given=spec.annotations or spec.panoptic,
                               expected="at least one entry in 'images'")
        self.image_ids = tuple(ids)
        self.samples = tuple(Sample(source.images[i][0], source.images[i][1:], (), ())
                             for i in ids)
        self.mask_shape: tuple[int, int] = (spec.mask_size, spec.mask_size)

    @staticmethod
    def _panoptic_dir(panoptic: str, masks: str | None) -> AnyPath:
        where = storage.location(masks_dir(panoptic, masks))
        if not where.is_dir():
            raise DatasetError("the panoptic PNG directory does not exist", given=str(where),
                               expected="a directory of panoptic PNGs",
                               hint="set dataset.panoptic_masks (default: the panoptic JSON "
                                    "path without .json)")
        return where

    def _build_vocabulary(self, groups: list[tuple[str, str, tuple[tuple[int, str, str], ...]]],
                          categories: tuple[str, ...] | None) -> list[dict[int, int]]:
        """Number the labels of ``groups`` ((kind, name-clash suffix, categories), in label
        order), then the supercategories; return each group's category id -> label number."""
        kinds = {kind for kind, _, _ in groups}
        all_cats = [k for k in ("object", "stuff") if k in kinds] + ["supercategory"]
        cats = list(categories) if categories is not None else all_cats
        unknown = sorted(set(cats) - set(all_cats))
        if unknown:
            raise DatasetError(f"unknown categories {unknown}", expected=f"some of {all_cats}",
                               hint="fix dataset.categories (set dataset.stuff or "
                                    "dataset.panoptic for 'stuff')")
        names, owner = [""], [""]
        taken: set[str] = set()
        label_of: list[dict[int, int]] = []
        for kind, suffix, group in groups:
            label_of.append({})
            for cid, name, _ in group:
                label_of[-1][cid] = len(names)
                names.append(_unique_name(name, taken, suffix))
                owner.append(kind)
        supers: dict[str, int] = {}
        self._super = np.zeros(len(names), dtype=np.int64)  # label -> supercategory label
        for (_, _, group), labels in zip(groups, label_of, strict=True):
            for cid, _, sup in group:
                if sup and sup not in supers:
                    supers[sup] = len(names)
                    names.append(_unique_name(sup, taken, "super"))
                    owner.append("supercategory")
                self._super[labels[cid]] = supers.get(sup, 0)
        membership = np.array([[o == c for c in cats] for o in owner], dtype=bool)
        membership = membership.reshape(len(names), len(cats))
        primary = np.where(membership.any(axis=1), membership.argmax(axis=1), -1)
        self._keep = np.asarray(membership.any(axis=1))
        self.vocab = Vocabulary(tuple(names), tuple(cats), membership, primary.astype(np.int64))
        return label_of

    def __len__(self) -> int:
        return len(self.samples)

    def read_image(self, index: int) -> np.ndarray:
        """Decode image ``index`` as (h, w, 3) uint8 RGB; raise :class:`BadSampleError`."""
        name = self.samples[index].image
        return read_image_rgb(confined(self.root, name, self.follow_symlinks), name)

    def read_image_bytes(self, index: int) -> bytes:
        """The encoded file of image ``index``; raise :class:`BadSampleError`."""
        name = self.samples[index].image
        return read_file_bytes(confined(self.root, name, self.follow_symlinks), name)

    def label_masks(self, index: int) -> dict[int, np.ndarray]:
        """Label number -> (S, S) bool mask of every kept label present in image ``index``.

        Raises:
            BadSampleError: an annotation cannot be rasterised at the image's size, or the
                image's panoptic PNG is missing, unreadable or of another size.
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
                self._paint(masks, labels[cid], small)
        for label, small in self._panoptic_masks(index, rows, cols):
            self._paint(masks, label, small)
        return masks

    def _paint(self, masks: dict[int, np.ndarray], label: int, small: np.ndarray) -> None:
        """Add the (S, S) bool ``small`` to ``label`` and its supercategory, if kept."""
        for n in (label, int(self._super[label])):
            if n and self._keep[n]:
                masks[n] = masks[n] | small if n in masks else small

    def _panoptic_masks(self, index: int, rows: np.ndarray, cols: np.ndarray
                        ) -> list[tuple[int, np.ndarray]]:
        """(label, (S, S) bool mask) of each panoptic segment of image ``index``.

        ``rows`` (S, 1) and ``cols`` (1, S) are the sampled source pixels. The PNG is read
        only if the image has segments.
        """
        entry = self._panoptic.segments.get(self.image_ids[index]) if self._panoptic else None
        if not entry or not entry[1]:
            return []
        png, segments = entry
        h, w = self.samples[index].image_size
        path = confined(self._png_dir, png, self.follow_symlinks)
        ids = read_segment_ids(path, png, h, w)[rows, cols]
        return [(self._panoptic_label[cid], ids == sid) for sid, cid in segments]

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
