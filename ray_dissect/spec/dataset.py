"""The dataset sub-specs, one per `format`, and their discriminated union."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ray_dissect.spec.base import ADDED_LATER, Frozen, tag_of

FOLLOW_SYMLINKS = Field(
    False, description="read files that symlinks inside the root point to outside it "
    "(default: such files, and any path leaving the root, are bad samples 'outside the "
    "dataset root')")


class DatasetSpec(Frozen):
    """The concept dataset (Broden format).

    ``subset`` keeps index rows whose image path contains the substring (as CCE does with
    ``ade20k``); ``categories`` restricts the concept categories (default: all in the dataset);
    ``limit`` keeps the first N rows after filtering.
    """

    format: Literal["broden"] = "broden"
    root: str
    limit: Annotated[int, Field(gt=0)] | None = None
    subset: str | None = None
    categories: tuple[str, ...] | None = None
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS


class CocoDatasetSpec(Frozen):
    """A COCO-format concept dataset (read with pycocotools).

    ``annotations`` is an instances JSON (``stuff`` optionally a stuff JSON of the same
    images); ``panoptic`` a panoptic JSON whose PNGs are in ``panoptic_masks`` (default: the
    JSON path without ``.json``). At least one of ``annotations`` and ``panoptic`` is needed;
    the images are those of ``annotations`` if given, else of ``panoptic``. ``root`` is the
    image directory. Object categories (panoptic things) are pixel concepts of the category
    ``object``, stuff categories (panoptic stuff) of ``stuff``, and their supercategories a
    second category ``supercategory``. Masks are rasterised at ``mask_size`` x ``mask_size``.
    """

    format: Literal["coco"] = "coco"
    root: str
    annotations: str | None = None
    stuff: str | None = None
    panoptic: str | None = None
    panoptic_masks: str | None = None
    mask_size: Annotated[int, Field(gt=0, le=1024)] = 112
    limit: Annotated[int, Field(gt=0)] | None = None
    categories: tuple[str, ...] | None = None
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS

    @model_validator(mode="after")
    def _some_annotations(self) -> CocoDatasetSpec:
        if self.annotations is None and self.panoptic is None:
            raise ValueError("give 'annotations' (instances JSON) or 'panoptic' (panoptic "
                             "JSON), or both")
        if self.panoptic_masks is not None and self.panoptic is None:
            raise ValueError("'panoptic_masks' needs 'panoptic' (the panoptic JSON)")
        return self


IMAGE_EXTENSIONS: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif",
                                     ".tiff", ".webp")
"""The image suffixes of torchvision's ``ImageFolder``, the default of ``format: images``."""


class ImagesDatasetSpec(Frozen):
    """A folder of images without concept labels (``format: images``).

    Fields:
        root: the folder (a path or an fsspec URI), searched at any depth; hidden files and
            folders (names starting with ``.``) are skipped. The images are the files whose
            name ends in one of ``extensions``, in sorted path order.
        limit: keep the first N images of that order.
        extensions: file suffixes to read, case-insensitive, with or without the dot; stored
            lower-case with the dot, sorted (so ``[JPG]`` and ``[.jpg]`` are one spec).
            Default: torchvision ImageFolder's ``IMAGE_EXTENSIONS``.

    The first-level subfolders holding images are the classes (sorted names, like
    torchvision's ImageFolder: ``photos/geo/...`` and ``photos/lmk/...`` give classes
    ``geo`` and ``lmk``); images directly in ``root`` have no class. These images have no
    concept labels, so methods that score concepts refuse this format.
    """

    format: Literal["images"] = "images"
    root: str
    limit: Annotated[int, Field(gt=0)] | None = None
    extensions: Annotated[tuple[str, ...], Field(min_length=1)] = IMAGE_EXTENSIONS
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = {"." + ext.strip().lstrip(".").lower() for ext in value}
        if "." in out or any("/" in ext for ext in out):
            raise ValueError("each extension is a file suffix such as '.jpg' (no '/', not empty)")
        return tuple(sorted(out))


class PascalPartDatasetSpec(Frozen):
    """PASCAL-Part object and part annotations on VOC images (``format: pascal_part``).

    Fields:
        root: the folder of ``.mat`` annotation files (PASCAL-Part's ``Annotations_Part/``);
            each ``<stem>.mat`` directly in it is one sample, in sorted stem order.
        images: the VOC image folder (``VOCdevkit/VOC2010/JPEGImages/``); sample ``<stem>``'s
            image is ``<stem>.jpg`` in it.
        mask_size: masks are sampled to ``mask_size`` x ``mask_size`` (nearest at pixel
            centres, as ``format: coco``; the model's preprocessing also resizes to a square).
        limit: keep the first N samples.
        categories: concept categories to paint, some of ``object`` (the 20 VOC classes) and
            ``part`` (their grouped parts); default both. Label numbers do not depend on it.
    """

    format: Literal["pascal_part"] = "pascal_part"
    root: str
    images: str
    mask_size: Annotated[int, Field(gt=0, le=1024)] = 112
    limit: Annotated[int, Field(gt=0)] | None = None
    categories: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS


DATASET_FORMATS = ("broden", "coco", "images", "pascal_part")
AnyDatasetSpec = Annotated[
    Annotated[DatasetSpec, Tag("broden")] | Annotated[CocoDatasetSpec, Tag("coco")]
    | Annotated[ImagesDatasetSpec, Tag("images")]
    | Annotated[PascalPartDatasetSpec, Tag("pascal_part")],
    Discriminator(tag_of("format", "broden"))]

