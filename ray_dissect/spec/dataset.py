"""The dataset sub-specs, one per ``format``, and the registry of formats they form.

:data:`FORMATS` is the one place a format is registered (:class:`DatasetFormat`: spec model,
reader, concept labels or not); :data:`DATASET_FORMATS`, the ``dataset:`` union
:data:`AnyDatasetSpec` and :data:`CONCEPT_FORMATS` are read from it, as are the reader lookup
and the messages of :mod:`ray_dissect.datasets.registry`. A new format is its spec model here
(``format: Literal["<name>"] = "<name>"``, local path fields marked ``PATH``), its reader
module in :mod:`ray_dissect.datasets` and its entry in :data:`FORMATS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import Field, field_validator, model_validator

from ray_dissect.spec.base import ADDED_LATER
from ray_dissect.spec.formats import PATH, DatasetFormat, FormatSpec, by_name, format_union

FOLLOW_SYMLINKS = Field(
    False, description="read files that symlinks inside the root point to outside it "
    "(default: such files, and any path leaving the root, are bad samples 'outside the "
    "dataset root')")


class DatasetSpec(FormatSpec):
    """The concept dataset (Broden format).

    ``subset`` keeps index rows whose image path contains the substring (as CCE does with
    ``ade20k``); ``categories`` restricts the concept categories (default: all in the dataset);
    ``limit`` keeps the first N rows after filtering.
    """

    format: Literal["broden"] = "broden"
    """`broden` (the default format)."""
    root: Annotated[str, PATH]
    """The Broden-format folder (`index.csv`, `label.csv`, `c_*.csv`, `images/`); a path or an
    fsspec URI.
    """
    limit: Annotated[int, Field(gt=0)] | None = None
    """Keep the first N index rows (after `subset`)."""
    subset: str | None = None
    """Keep index rows whose image path contains this string (CCE's `ade20k`)."""
    categories: tuple[str, ...] | None = None
    """Concept categories to use (default: all in the dataset)."""
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS


class CocoDatasetSpec(FormatSpec):
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
    """`coco`: COCO instances, stuff and/or panoptic annotations."""
    root: Annotated[str, PATH]
    """The image folder."""
    annotations: Annotated[str | None, PATH] = None
    """An instances JSON (give this and/or `panoptic`)."""
    stuff: Annotated[str | None, PATH] = None
    """A stuff JSON of the same images."""
    panoptic: Annotated[str | None, PATH] = None
    """A panoptic JSON (its PNGs in `panoptic_masks`)."""
    panoptic_masks: Annotated[str | None, PATH] = None
    """The panoptic PNG folder (default: the `panoptic` path without `.json`)."""
    mask_size: Annotated[int, Field(gt=0, le=1024)] = 112
    """Masks are rasterised at mask_size x mask_size pixels."""
    limit: Annotated[int, Field(gt=0)] | None = None
    """Keep the first N images."""
    categories: tuple[str, ...] | None = None
    """Concept categories to use (`object`, `stuff`, `supercategory`; default all)."""
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


class ImagesDatasetSpec(FormatSpec):
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
    """`images`: an image folder without concept labels (needs `method: {kind: none}`)."""
    root: Annotated[str, PATH]
    """The folder (path or fsspec URI), searched at any depth; first-level subfolders are classes.
    """
    limit: Annotated[int, Field(gt=0)] | None = None
    """Keep the first N images in sorted path order."""
    extensions: Annotated[tuple[str, ...], Field(min_length=1)] = IMAGE_EXTENSIONS
    """File suffixes to read, case-insensitive (default: torchvision ImageFolder's)."""
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = {"." + ext.strip().lstrip(".").lower() for ext in value}
        if "." in out or any("/" in ext for ext in out):
            raise ValueError("each extension is a file suffix such as '.jpg' (no '/', not empty)")
        return tuple(sorted(out))


class PascalPartDatasetSpec(FormatSpec):
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
    """`pascal_part`: PASCAL-Part objects and parts on VOC images."""
    root: Annotated[str, PATH]
    """The folder of `.mat` annotation files (`Annotations_Part/`)."""
    images: Annotated[str, PATH]
    """The VOC image folder (`VOCdevkit/VOC2010/JPEGImages/`)."""
    mask_size: Annotated[int, Field(gt=0, le=1024)] = 112
    """Masks are sampled to mask_size x mask_size pixels."""
    limit: Annotated[int, Field(gt=0)] | None = None
    """Keep the first N samples (sorted stems)."""
    categories: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    """Concept categories to paint: `object`, `part` (default both)."""
    follow_symlinks: Annotated[bool, ADDED_LATER] = FOLLOW_SYMLINKS


FORMATS: tuple[DatasetFormat, ...] = (  # the first is the default of a spec without format
    DatasetFormat(DatasetSpec, "ray_dissect.datasets.broden:BrodenDataset", concepts=True),
    DatasetFormat(CocoDatasetSpec, "ray_dissect.datasets.coco:CocoDataset", concepts=True),
    DatasetFormat(ImagesDatasetSpec, "ray_dissect.datasets.images:ImageFolderDataset",
                  concepts=False),
    DatasetFormat(PascalPartDatasetSpec,
                  "ray_dissect.datasets.pascal_part_reader:PascalPartDataset", concepts=True),
)
FORMATS_BY_NAME = by_name(FORMATS)
DATASET_FORMATS: tuple[str, ...] = tuple(FORMATS_BY_NAME)
"""The format names, registration order."""
CONCEPT_FORMATS: tuple[str, ...] = tuple(fmt.name for fmt in FORMATS if fmt.concepts)
"""The formats whose readers give concept labels."""

if TYPE_CHECKING:
    AnyDatasetSpec: TypeAlias = FormatSpec
else:
    AnyDatasetSpec = format_union(FORMATS)
