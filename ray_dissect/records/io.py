"""Reading and writing records: JSON Lines files and the JSON Schemas in ``schemas/``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ray_dissect import storage
from ray_dissect.errors import StoreError
from ray_dissect.records.schema import RECORD_TYPES, UnitRecord
from ray_dissect.records.studies import STUDY_RECORD_TYPES
from ray_dissect.storage import AnyPath

R = TypeVar("R", bound=BaseModel)


def write_jsonl(path: AnyPath, records: Iterable[BaseModel]) -> None:
    """Write records as JSON Lines atomically (see :func:`ray_dissect.storage.write_text`)."""
    storage.write_text(path, "".join(record.model_dump_json() + "\n" for record in records))


def read_jsonl(path: AnyPath, kind: type[R]) -> Iterator[R]:
    """Read and validate a JSON Lines file of ``kind`` records.

    Raises:
        StoreError: a line is not a valid record (a truncated or damaged file), one line
            naming the file and the line number.
    """
    for number, line in enumerate(storage.read_text(path).splitlines(), 1):
        if line.strip():
            try:
                yield kind.model_validate_json(line)
            except ValidationError as err:
                raise StoreError(f"{str(path)!r} line {number} is not a valid {kind.__name__} "
                                 f"({err.errors()[0]['msg']})", expected="a complete file",
                                 hint="delete it and its .done marker, then resume to redo it"
                                 ) from None


def read_unit_records(path: AnyPath) -> Iterator[UnitRecord]:
    """Read and validate a ``records/<layer>.jsonl`` file (raises as :func:`read_jsonl`)."""
    return read_jsonl(path, UnitRecord)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of the job spec and of every record type, keyed by file stem."""
    from ray_dissect.spec import JobSpec

    out = {"job_spec": JobSpec.model_json_schema()}
    out.update({name: cls.model_json_schema() for name, cls in RECORD_TYPES.items()})
    out.update({name: cls.model_json_schema() for name, cls in STUDY_RECORD_TYPES.items()})
    return out


def write_schemas(directory: Path) -> list[Path]:
    """Write ``<name>.schema.json`` for each schema into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths
