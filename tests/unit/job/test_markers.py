"""Done markers record the stage hash and the part's sha256; reuse checks both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from ray_dissect.job.layout import done_marker
from ray_dissect.job.markers import mark_done, verified_done
from ray_dissect.storage import arrays


@pytest.fixture
def part(tmp_path: Path) -> Path:
    path = tmp_path / "0000000-0000004.jsonl"
    path.write_text('{"unit": 0}\n{"unit": 1}\n')
    return path


def test_a_marker_records_the_stage_hash_and_the_parts_sha256(part: Path) -> None:
    mark_done(part, "abc")
    assert json.loads(done_marker(part).read_text()) == {
        "stage": "abc", "sha256": hashlib.sha256(part.read_bytes()).hexdigest()}
    assert verified_done(part, "abc")


@pytest.mark.parametrize("damage", ["other stage", "changed", "deleted", "garbage marker"])
def test_a_marker_that_does_not_hold_is_cleared(part: Path, damage: str) -> None:
    mark_done(part, "abc")
    if damage == "changed":
        part.write_text('{"unit": 0}\n{"uni')
    elif damage == "deleted":
        part.unlink()
    elif damage == "garbage marker":
        done_marker(part).write_bytes(b"\xff\xfe")
    assert not verified_done(part, "xyz" if damage == "other stage" else "abc")
    assert not done_marker(part).exists()


def test_a_legacy_empty_marker_is_accepted_while_its_part_is_not_empty(part: Path) -> None:
    done_marker(part).write_bytes(b"")
    assert verified_done(part, "abc")
    part.write_bytes(b"")
    assert not verified_done(part, "abc")


def test_shards_without_digests_are_accepted_and_damaged_ones_cleared(tmp_path: Path) -> None:
    """A shard written before digests existed is accepted as it is; a shard whose values
    changed behind its mark is marked not done and its object removed."""
    store = tmp_path / "a.zarr"
    arrays.create_image_array(store, "x", (4, 2), "float32", 2, 2)
    arrays.write_shard(store, "x", 0, 2, np.ones((2, 2)))
    arrays.write_shard(store, "x", 1, 2, np.full((2, 2), 2.0))
    (store / "digests" / "x" / "000000.json").unlink()  # as an older version wrote it
    zarr.open_array(str(store), path="data/x", mode="r+")[2:4] = np.full((2, 2), 3.0)
    assert arrays.done_shards(store, "x").tolist() == [True, False]
    assert arrays.done_shards(store, "x", verify=False).tolist() == [True, False]
    assert not (store / "data" / "x" / "c" / "1" / "0").exists()
    assert np.asarray(arrays.open_array(store, "x")[0:2]).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_a_legacy_shard_deleted_or_truncated_is_redone_not_read_as_zeros(tmp_path: Path) -> None:
    """Without digests (an older store), a done shard whose object was deleted would read as
    fill values and a truncated one fails to decode: both are marked not done; an intact
    legacy shard is kept."""
    store = tmp_path / "a.zarr"
    arrays.create_image_array(store, "x", (6, 2), "float32", 2, 2)
    for shard in range(3):
        arrays.write_shard(store, "x", shard, 2, np.full((2, 2), shard + 1.0))
    for shard in range(3):
        (store / "digests" / "x" / f"{shard:06d}.json").unlink()
    (store / "data" / "x" / "c" / "1" / "0").unlink()
    obj = store / "data" / "x" / "c" / "2" / "0"
    obj.write_bytes(obj.read_bytes()[:-7])
    assert arrays.done_shards(store, "x").tolist() == [True, False, False]
    assert np.asarray(arrays.open_array(store, "x")[0:2]).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_an_array_written_by_another_stage_hash_is_redone(tmp_path: Path) -> None:
    """The array records its stage hash; opened for another one, all its marks are cleared;
    an array from before stage hashes were recorded is taken as it is."""
    store = tmp_path / "a.zarr"
    arrays.create_image_array(store, "x", (4, 2), "float32", 2, 2, stage_hash="old")
    for shard in (0, 1):
        arrays.write_shard(store, "x", shard, 2, np.ones((2, 2)))
    arrays.create_image_array(store, "x", (4, 2), "float32", 2, 2, stage_hash="old")
    assert arrays.done_shards(store, "x").tolist() == [True, True]
    arrays.create_image_array(store, "x", (4, 2), "float32", 2, 2, stage_hash="new")
    assert arrays.done_shards(store, "x").tolist() == [False, False]
    arrays.write_shard(store, "x", 0, 2, np.ones((2, 2)))
    (store / "digests" / "x" / "stage.json").unlink()
    arrays.create_image_array(store, "x", (4, 2), "float32", 2, 2, stage_hash="new")
    assert arrays.done_shards(store, "x").tolist() == [True, False]
