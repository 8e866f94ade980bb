"""The pydantic base every spec model shares (frozen, unknown keys refused), and what the
spec hash covers.

A spec field added after the first release is marked ``Annotated[T, ADDED_LATER]``: while it
holds its default it is left out of :func:`hashed_data`, so the spec hash (and every stage
hash) of a spec that does not use it is the one earlier versions wrote, and their job
directories resume.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict

T = TypeVar("T", bound=tuple[Hashable, ...])


class Frozen(BaseModel):
    """A frozen spec model that refuses unknown keys; a field's docstring (the string right
    after it) is its description in the JSON Schema and the docs' spec reference."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class AddedLater:
    """Field marker: left out of the spec hash while at its default (see the module doc)."""

    def __repr__(self) -> str:
        return "ADDED_LATER"


ADDED_LATER = AddedLater()


def _prune(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    """Drop from ``data`` (``model``'s JSON dump) the ADDED_LATER fields at their defaults."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if ADDED_LATER in field.metadata and value == field.get_default(
                call_default_factory=True):
            data.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _prune(value, data[name])
    return data


def hashed_data(model: BaseModel) -> dict[str, Any]:
    """``model``'s JSON dump without the ADDED_LATER fields that hold their defaults."""
    return _prune(model, model.model_dump(mode="json"))


def digest(data: Any) -> str:
    """First 16 hex digits of the sha256 of ``data`` as canonical JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _no_repeats(value: T) -> T:
    repeated = sorted({str(v) for v in value if value.count(v) > 1})
    if repeated:
        raise ValueError(f"values must be unique; repeated: {', '.join(repeated)}")
    return value


UNIQUE = AfterValidator(_no_repeats)
"""Annotated marker for tuple fields whose values must not repeat."""


def tag_of(field: str, default: str) -> Callable[[Any], str]:
    """A union discriminator: the value's ``field`` (dict key or attribute), else ``default``."""
    def tag(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get(field, default))
        return str(getattr(value, field, default))

    return tag
