"""MkDocs hook: the job spec reference, generated from ``schemas/job_spec.schema.json``.

A page holding the marker ``<!-- job-spec-reference -->`` gets, in its place, one section per
spec model (reached from the top-level ``JobSpec``, union members each in their own section)
with a table of every field: its name, type, default (or *required*), constraints and
description (the field's docstring in ``ray_dissect/spec/``). The schema file is the one
``ray-dissect schema`` writes and a test keeps in step with the code, so the page cannot drift
from the spec. ``render`` is importable (``tests/unit/docs``) without MkDocs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MARKER = "<!-- job-spec-reference -->"
SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "job_spec.schema.json"
CONSTRAINTS = (("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"),
               ("exclusiveMaximum", "< {}"), ("minItems", "at least {} items"),
               ("minLength", "at least {} characters"), ("pattern", "matches `{}`"))
Schema = dict[str, Any]


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(prop: Schema) -> str:
    """A short type for one property: ``integer``, ``list of string``, ``"a" | "b"``, ..."""
    if "$ref" in prop:
        return f"[{_ref_name(prop['$ref'])}](#{_ref_name(prop['$ref']).lower()})"
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " \\| ".join(type_of(p) for p in prop[key])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {type_of(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of string to {type_of(prop['additionalProperties'])}"
    return "null" if kind == "null" else f"{kind}"


def constraints_of(prop: Schema) -> str:
    """The constraints of a property and of its union members, e.g. ``> 0, <= 4096``."""
    parts = [text.format(prop[key]) for key, text in CONSTRAINTS if key in prop]
    for member in prop.get("anyOf", []) + prop.get("oneOf", []):
        parts += [text.format(member[key]) for key, text in CONSTRAINTS if key in member]
    return ", ".join(parts)


def default_of(prop: Schema, required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in prop:  # a default factory: pydantic leaves it out of the schema
        return {"object": "`{}`", "array": "`[]`"}.get(prop.get("type", ""), "(computed)")
    text = json.dumps(prop["default"], separators=(", ", ": "))
    return f"`{text}`" if len(text) <= 60 else "(the sub-model's defaults)"


def _markdown(text: str) -> str:
    """Docstring markup (``x``, :mod:`x`) as Markdown, on one line."""
    text = re.sub(r":\w+:`([^`]+)`", r"`\1`", text).replace("``", "`")
    return " ".join(text.split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def field_rows(model: Schema) -> list[str]:
    """The table rows of a model's fields (one per property, in name order)."""
    required = set(model.get("required", []))
    rows = []
    for name, prop in sorted(model.get("properties", {}).items()):
        desc = _cell(_markdown(prop.get("description", "")))
        rows.append(f"| <a id=\"{model.get('title', '').lower()}.{name}\"></a>`{name}` | "
                    f"{type_of(prop)} | {default_of(prop, name in required)} | "
                    f"{_cell(constraints_of(prop))} | {desc} |")
    return rows


def _children(prop: Schema) -> list[str]:
    """The model names a property refers to (directly or through a union)."""
    found = [_ref_name(prop["$ref"])] if "$ref" in prop else []
    for key in ("anyOf", "oneOf"):
        for member in prop.get(key, []):
            found += _children(member)
    if prop.get("type") == "array":
        found += _children(prop.get("items", {}))
    if isinstance(prop.get("additionalProperties"), dict):
        found += _children(prop["additionalProperties"])
    return found


def walk(schema: Schema) -> list[tuple[str, str, Schema]]:
    """(path, model name, model schema) for every model reachable from the root, depth
    first: ``("model.preprocess", "PreprocessSpec", {...})``."""
    defs, out, seen = schema.get("$defs", {}), [], set()

    def visit(path: str, name: str, model: Schema) -> None:
        out.append((path, name, model))
        seen.add(name)
        for field, prop in sorted(model.get("properties", {}).items()):
            key = f"{path}.{field}" if path else field
            if prop.get("type") == "object":  # a map: its values are the models
                key += ".<name>"
            for child in _children(prop):
                if child not in seen:
                    visit(key, child, defs[child])

    visit("", schema.get("title", "JobSpec"), schema)
    return out


def _tag(model: Schema) -> str:
    """`` (format: coco)`` for a member of a tagged union, else ``""``."""
    for key in ("format", "kind"):
        const = model.get("properties", {}).get(key, {}).get("const")
        if const is not None:
            return f" ({key}: {const})"
    return ""


def section(path: str, name: str, model: Schema) -> str:
    title = f"`{path}`{_tag(model)}" if path else "The job (top level)"
    head = [f"### {title} · {name} {{ #{name.lower()} }}", "",
            _markdown(model.get("description", "")), "",
            "| field | type | default | constraints | meaning |", "|---|---|---|---|---|"]
    return "\n".join([*head, *field_rows(model), ""])


def render(schema: Schema) -> str:
    """The whole reference as Markdown."""
    return "\n".join(section(path, name, model) for path, name, model in walk(schema))


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs event: replace the marker with the reference built from the schema file."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(json.loads(SCHEMA.read_text())))
