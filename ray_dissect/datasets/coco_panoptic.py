"""COCO panoptic annotations for :mod:`ray_dissect.datasets.coco`: JSON parse and PNG decode.

How panoptic categories become concepts and segments become masks is described in the
:mod:`ray_dissect.datasets.coco` module docstring. This module only reads: the panoptic JSON (parsed
once per process, cached by location and :func:`ray_dissect.storage.version_key` like the
instances JSON) and one PNG of segment ids at a time; :func:`images_and_categories` reads the
fields every COCO JSON shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ray_dissect import storage
from ray_dissect.datasets.base import BadSampleError, decoding, load_annotations
from ray_dissect.errors import DatasetError
from ray_dissect.storage import AnyPath

MAX_SEGMENT_ID = 256**3 - 1
Segments = tuple[tuple[int, int], ...]
Category = tuple[int, str, str]


@dataclass(frozen=True)
class PanopticFile:
    """The parts of one COCO panoptic JSON the reader keeps.

    Attributes:
        images: image id -> (file_name, height, width), ascending ids.
        categories: (category id, name, supercategory or "") by ascending id.
        things: ids of the categories with ``isthing == 1`` (the others are stuff).
        segments: image id -> (PNG file name, ((segment id, category id), ...) in file order).
    """

    images: dict[int, tuple[str, int, int]]
    categories: tuple[tuple[int, str, str], ...]
    things: frozenset[int]
    segments: dict[int, tuple[str, Segments]]

    def groups(self) -> list[tuple[str, tuple[tuple[int, str, str], ...]]]:
        """("object", thing categories) and ("stuff", stuff categories), empty ones left out."""
        things = tuple(c for c in self.categories if c[0] in self.things)
        stuff = tuple(c for c in self.categories if c[0] not in self.things)
        return [(kind, cats) for kind, cats in (("object", things), ("stuff", stuff)) if cats]


def _entry(ann: dict[str, Any], known: set[int]) -> tuple[int, tuple[str, Segments]]:
    image_id = int(ann["image_id"])
    segs = tuple((int(s["id"]), int(s["category_id"])) for s in ann["segments_info"])
    for sid, cid in segs:
        if cid not in known:
            raise KeyError(f"segment {sid} of image {image_id} has unknown category_id {cid}")
        if not 0 < sid <= MAX_SEGMENT_ID:
            raise ValueError(f"segment id {sid} of image {image_id} is not in "
                             f"1..{MAX_SEGMENT_ID}")
    if len({sid for sid, _ in segs}) != len(segs):
        raise ValueError(f"duplicate segment ids in image {image_id}")
    return image_id, (str(ann["file_name"]), segs)


def images_and_categories(raw: dict[str, Any]
                          ) -> tuple[dict[int, tuple[str, int, int]], tuple[Category, ...]]:
    """The ``images`` (id -> (file_name, height, width), ascending ids) and ``categories``
    ((id, name, supercategory or ""), ascending ids) of any COCO JSON.

    Raises:
        ValueError, KeyError, TypeError: missing fields or duplicate category ids.
    """
    images = {int(im["id"]): (str(im["file_name"]), int(im["height"]), int(im["width"]))
              for im in sorted(raw["images"], key=lambda im: int(im["id"]))}
    cats = tuple(sorted((int(c["id"]), str(c["name"]), str(c.get("supercategory") or ""))
                        for c in raw["categories"]))
    if len({c[0] for c in cats}) != len(cats):
        raise ValueError("duplicate category ids")
    return images, cats


def _parse(raw: dict[str, Any]) -> PanopticFile:
    images, cats = images_and_categories(raw)
    known = {c[0] for c in cats}
    if any(int(c["isthing"]) not in (0, 1) for c in raw["categories"]):
        raise ValueError("isthing must be 0 or 1")
    things = frozenset(int(c["id"]) for c in raw["categories"] if int(c["isthing"]))
    segments: dict[int, tuple[str, Segments]] = {}
    for ann in raw.get("annotations", []):
        image_id, entry = _entry(ann, known)
        if image_id in segments:
            raise ValueError(f"two annotations for image {image_id}")
        segments[image_id] = entry
    return PanopticFile(images, cats, things, segments)


def load_panoptic(path: str | AnyPath) -> PanopticFile:
    """Parse (or fetch from the per-process cache) the panoptic JSON at ``path`` (a local path
    or an fsspec URI).

    Raises:
        DatasetError: the file is missing, unreadable or not a COCO panoptic JSON.
    """
    return load_annotations(path, "panoptic", _parse, "a COCO panoptic JSON with images, "
                            "categories (with isthing) and annotations (with segments_info)",
                            "annotations/panoptic_val2017.json")


def masks_dir(panoptic: str, masks: str | None) -> str:
    """The PNG directory: ``masks`` if given, else ``panoptic`` without its ``.json`` suffix.

    Raises:
        DatasetError: no ``masks`` and ``panoptic`` does not end in ``.json``.
    """
    if masks is not None:
        return masks
    if not panoptic.lower().endswith(".json"):
        raise DatasetError("cannot derive dataset.panoptic_masks", given=panoptic,
                           expected="a panoptic JSON named *.json",
                           hint="set dataset.panoptic_masks to the PNG directory")
    return panoptic[: -len(".json")]


def read_segment_ids(path: AnyPath, name: str, height: int, width: int) -> np.ndarray:
    """(height, width) int64 segment id of every pixel of a panoptic PNG: R + 256 G + 65536 B.

    0 is void. Palette and RGBA PNGs are converted to RGB first; other modes are refused.

    Raises:
        BadSampleError: the PNG (named ``name``) is missing, unreadable, not RGB or not
            ``height`` x ``width``.
    """
    with decoding(f"panoptic PNG {name}"), Image.open(storage.readable(path)) as img:
        img.load()
        mode = img.mode
        rgb = np.asarray(img.convert("RGB"), dtype=np.int64) \
            if mode in ("RGB", "RGBA", "P") else None
    if rgb is None:
        raise BadSampleError(f"panoptic PNG {name} has mode {mode}, expected RGB")
    if rgb.shape[:2] != (height, width):
        raise BadSampleError(f"panoptic PNG {name} is {rgb.shape[1]}x{rgb.shape[0]}, "
                             f"image is {width}x{height}")
    return rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
