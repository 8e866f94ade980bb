"""The report's options, and what rendering records about each unit's tiles.

:class:`ReportOptions` is what a user chooses (``ray-dissect report --style --tile
--unit-pages``); :class:`BlockTiles` is what one render work unit returns and keeps in
``report/_render/<layer>/<u0>-<u1>.json``: per unit its sprite, its rows of tiles with their
captions, and its activation histogram. These are plain pydantic models, so a result crosses a
process boundary (a Ray task) as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ray_dissect.errors import SpecError
from ray_dissect.report.tiles import STYLES, TileStyle

Pages = Literal["all", "interpretable"]
RowKind = Literal["top", "range", "samples"]
BLOCK_UNITS = 64


@dataclass(frozen=True)
class ReportOptions:
    """What the report shows and how big it gets.

    Attributes:
        style: ``default`` (tiles no larger than 112 px or the images, contour, three views)
            or ``ndl`` (NetDissect-Lite's strip: 224 px, 3-px gaps, no contour).
        tile: full-size tile side in px (overrides the style's).
        unit_pages: ``all`` units get a page, or only ``interpretable`` ones (label or a
            range at the IoU threshold).
        block_units: units per render work unit.
    """

    style: Literal["default", "ndl"] = "default"
    tile: int | None = None
    unit_pages: Pages = "all"
    block_units: int = BLOCK_UNITS

    def tile_style(self, image_side: int | None = None) -> TileStyle:
        """The tile style these options select; the default style's tiles are no larger than
        the dataset's images (``image_side``).

        Raises:
            SpecError: an unknown style, unit-pages mode or tile size.
        """
        if self.style not in STYLES:
            raise SpecError("unknown report style", given=self.style,
                            expected=f"one of {sorted(STYLES)}", hint="use --style default")
        if self.unit_pages not in ("all", "interpretable"):
            raise SpecError("bad --unit-pages", given=self.unit_pages,
                            expected="'all' or 'interpretable'", hint="use --unit-pages all")
        base = STYLES[self.style]
        if self.tile is None:
            if self.style == "default" and image_side and image_side < base.size:
                return TileStyle(**{**base.__dict__, "size": image_side})
            return base
        if not 8 <= self.tile <= 1024:
            raise SpecError("bad tile size", given=self.tile, expected="8 to 1024 px",
                            hint="e.g. --tile 112")
        return TileStyle(**{**base.__dict__, "size": self.tile})

    def describe(self, style: TileStyle) -> dict[str, str]:
        """The options as footer text."""
        return {"style": self.style, "unit pages": self.unit_pages, "tile": f"{style.size} px"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TileInfo(_Model):
    """One tile's caption: the image, its max activation, in-range pixels, IoU with the
    concept mask (the label's, or the range formula's) on that image."""

    index: int
    image: str
    value: float | None
    pixels: int
    iou: float | None


class RowTiles(_Model):
    """One row of tiles of a unit: a full-size strip per view on its unit page, or with
    ``overlay`` the shared raw images (``img/src/<height>/<index>.webp``) under a transparent
    strip per view (``files``: ``mask``, ``concept`` when a concept is outlined, and
    ``heat``, the row's maps at their own (h, w) ``map_shape``, scaled and coloured by the
    page: :mod:`ray_dissect.report.heat`)."""

    key: str
    kind: RowKind
    title: str
    range_index: int | None
    seed: int | None
    files: dict[str, str]
    width: int
    height: int
    tiles: list[TileInfo]
    overlay: bool = False
    map_shape: tuple[int, int] | None = None


class Histogram(_Model):
    """A unit's activation histogram over valid images: equal bins over [min, max] of its
    finite non-zero values (``edges`` empty when there is none); exact zeros and non-finite
    values are counted apart."""

    edges: list[float]
    counts: list[int]
    zeros: int
    nonfinite: int


class UnitTiles(_Model):
    """What the pages need about one unit's tiles."""

    unit: int
    page: bool
    sprite: str | None
    sprite_width: int
    sprite_height: int
    sprite_rows: list[str]
    rows: list[RowTiles]
    histogram: Histogram


class BlockTiles(_Model):
    """The result of one render work unit."""

    layer: str
    units: tuple[int, int]
    digest: str
    tiles: list[UnitTiles]
