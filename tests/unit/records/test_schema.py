"""Records: versioned, round-trippable, and schemas/ in sync with the code."""

from __future__ import annotations

import json
from pathlib import Path

from ray_dissect.records.io import json_schemas, read_unit_records, write_jsonl
from ray_dissect.records.schema import ConceptScore, Provenance, UnitRecord

SCHEMAS = Path(__file__).parents[3] / "schemas"


def test_schemas_directory_matches_code() -> None:
    """schemas/ equals what the code exports; run `ray-dissect schema` after changing records."""
    for name, schema in json_schemas().items():
        path = SCHEMAS / f"{name}.schema.json"
        assert path.exists(), f"{path} missing: run `ray-dissect schema`"
        assert json.loads(path.read_text()) == schema, f"{path} drifted: run `ray-dissect schema`"
    assert {p.name for p in SCHEMAS.glob("*.schema.json")} == {
        f"{n}.schema.json" for n in json_schemas()}


def test_unit_record_round_trip(tmp_path: Path) -> None:
    """Records written as JSON Lines read back equal, with the current schema_version."""
    score = ConceptScore(name="red", number=9, category="color", iou=0.25)
    rec = UnitRecord(layer="l", unit=3, threshold=0.5, label=score, interpretable=True,
                     per_category={"color": score}, top=[score], mask_pixels=10, nonfinite=0,
                     provenance=Provenance(job="j", spec_hash="abc", package_version="0.1.0"))
    write_jsonl(tmp_path / "r.jsonl", [rec, rec])
    back = list(read_unit_records(tmp_path / "r.jsonl"))
    assert back == [rec, rec] and back[0].schema_version == 4
