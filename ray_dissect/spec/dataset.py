"""The dataset sub-specs, one per `format`, and their discriminated union."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from ray_dissect.spec.base import Frozen


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

    @model_validator(mode="after")
    def _some_annotations(self) -> CocoDatasetSpec:
        if self.annotations is None and self.panoptic is None:
            raise ValueError("give 'annotations' (instances JSON) or 'panoptic' (panoptic "
                             "JSON), or both")
        if self.panoptic_masks is not None and self.panoptic is None:
            raise ValueError("'panoptic_masks' needs 'panoptic' (the panoptic JSON)")
        return self


def _dataset_format(value: Any) -> str:
    """The dataset's ``format``; a dataset given without one is Broden."""
    if isinstance(value, dict):
        return str(value.get("format", "broden"))
    return str(getattr(value, "format", "broden"))


AnyDatasetSpec = Annotated[
    Annotated[DatasetSpec, Tag("broden")] | Annotated[CocoDatasetSpec, Tag("coco")],
    Discriminator(_dataset_format)]

