"""How a dataset format is registered: its spec model, its reader and what it offers.

A format is one :class:`DatasetFormat` entry in :data:`ray_dissect.spec.dataset.FORMATS`; the
spec's ``dataset:`` union, the format names of error messages and hints, the spec's path
resolution and :func:`ray_dissect.datasets.registry.open_dataset` all read that tuple. The
reader is named by its import path (as an entry point is), so the spec layer imports nothing
of ``datasets`` and opening a Broden dataset imports no COCO code.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Discriminator, Tag

from ray_dissect.spec.base import Frozen, tag_of


class PathField:
    """Field marker (``Annotated[str, PATH]``): a local path of the dataset (a file or folder),
    resolved against the current directory when the spec is loaded; URIs are left as given."""

    def __repr__(self) -> str:
        return "PATH"


PATH = PathField()


class FormatSpec(Frozen):
    """What every format's ``dataset:`` model has: the ``format`` tag (a subclass narrows it to
    ``Literal["<name>"] = "<name>"``)."""

    format: str


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset format.

    Attributes:
        spec: the model of its ``dataset:`` section; the default of its ``format`` field is
            the format's name.
        reader: ``"module:Class"``, the reader class, constructed with an instance of
            ``spec``; imported only when a dataset of this format is opened.
        concepts: whether the reader gives concept labels (a ``ConceptDataset``), not only
            images (an ``ImageDataset``).
    """

    spec: type[FormatSpec]
    reader: str
    concepts: bool

    def __post_init__(self) -> None:
        field = self.spec.model_fields["format"]
        if not isinstance(field.default, str) or typing.get_args(field.annotation) != (
                field.default,):
            raise TypeError(f"{self.spec.__name__}.format must be Literal['<name>'] = '<name>'")
        if self.reader.count(":") != 1:
            raise TypeError(f"reader of {self.name!r} must be 'module:Class', not {self.reader!r}")

    @property
    def name(self) -> str:
        """The ``format`` value that selects this format."""
        return str(self.spec.model_fields["format"].default)

    @property
    def paths(self) -> tuple[str, ...]:
        """The spec fields marked :data:`PATH`, in field order."""
        return tuple(name for name, field in self.spec.model_fields.items()
                     if PATH in field.metadata)


def by_name(formats: Sequence[DatasetFormat]) -> Mapping[str, DatasetFormat]:
    """``formats`` keyed by name, in their order.

    Raises:
        TypeError: two formats share a name.
    """
    named = {fmt.name: fmt for fmt in formats}
    if len(named) != len(formats):
        raise TypeError(f"dataset format names repeat: {[fmt.name for fmt in formats]}")
    return named


def format_union(formats: Sequence[DatasetFormat]) -> Any:
    """The pydantic discriminated union of the formats' spec models, selected by ``format``;
    a section without ``format`` is the first format."""
    members = tuple(Annotated[fmt.spec, Tag(fmt.name)] for fmt in formats)
    return Annotated[typing.Union[members],  # noqa: UP007 (built from a tuple)
                     Discriminator(tag_of("format", formats[0].name))]


def one_of(names: Sequence[str]) -> str:
    """``names`` as prose: ``"a"``, ``"a or b"``, ``"a, b or c"``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
