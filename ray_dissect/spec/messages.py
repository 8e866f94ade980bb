"""Spec errors in plain words: pydantic's wording ("Input tag ... found using tag() does not
match any of the expected tags") turned into what was given, what is allowed and, for a
near miss, the close match: ``field 'method.kind': must be one of 'netdissect',
'compositional', 'clustered', 'none', got 'compositonal' (did you mean 'compositional'?)``."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

TAG_FIELDS = {"method": "kind", "dataset": "format"}
"""The key that picks a union member, per spec section."""


def did_you_mean(given: object, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``given``, or ''."""
    if not isinstance(given, str):
        return ""
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quoted(text: str) -> list[str]:
    """The quoted words of pydantic's ``'a', 'b' or 'c'``."""
    return re.findall(r"'([^']*)'", text)


def plain_message(error: Mapping[str, Any], field: str, known: list[str] | None = None) -> str:
    """One validation error of ``field`` in plain words.

    Args:
        error: one of ``ValidationError.errors()``.
        field: its dotted location as shown.
        known: the field names allowed beside an unknown one (for its close match).
    """
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "union_tag_invalid":
        key, tags = TAG_FIELDS.get(field, "kind"), _quoted(str(ctx.get("expected_tags", "")))
        return (f"field '{field}.{key}': must be one of {', '.join(map(repr, tags))}, got "
                f"{ctx.get('tag')!r}{did_you_mean(ctx.get('tag'), tags)}")
    if kind == "literal_error":
        allowed = _quoted(str(ctx.get("expected", "")))
        return (f"field '{field}': must be one of {', '.join(map(repr, allowed))}, got {given!r}"
                f"{did_you_mean(given, allowed)}")
    if kind == "extra_forbidden":
        name = field.rsplit(".", 1)[-1]
        return f"field '{field}': not a known field{did_you_mean(name, known or [])}"
    if kind == "missing":
        return f"field '{field}': required, missing"
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"field '{field}': {error['msg']}{shown}"
