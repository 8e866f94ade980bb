"""Locations: local paths and fsspec URIs, checked against a local S3 (moto) server."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from fixtures.s3 import LocalS3

from ray_dissect import storage
from ray_dissect.errors import StoreError
from ray_dissect.storage import arrays


@pytest.mark.parametrize(("text", "uri"), [
    ("runs/a", False), ("/abs/a", False), ("file:///abs/a", False), ("FILE:///x", False),
    ("s3://bucket/a", True), ("gs://b/x", True), ("memory://x", True), ("c:/x", False)])
def test_is_uri(text: str, uri: bool) -> None:
    assert storage.is_uri(text) is uri


def test_local_and_file_uris_are_plain_paths(tmp_path: Path) -> None:
    assert storage.location(str(tmp_path)) == tmp_path
    assert storage.location(f"file://{tmp_path}") == tmp_path
    assert type(storage.location(f"file://{tmp_path}")) is type(tmp_path)
    assert storage.location(tmp_path) is tmp_path


def test_unknown_protocol_is_one_clear_error() -> None:
    with pytest.raises(StoreError, match=r"cannot open 'nosuchfs://x/y'.*install the fsspec "
                                         r"implementation of 'nosuchfs://'"):
        storage.location("nosuchfs://x/y")


def test_local_writes_are_atomic_and_leave_no_temporaries(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A disk that fills mid-write: the old file stays whole, the half-written temporary is
    removed, and the failure is one StoreError naming the file (exit 5); any other OSError
    propagates as it is."""
    target = tmp_path / "m.json"
    storage.write_text(target, "old")
    real = Path.write_bytes
    for code, kind in ((errno.ENOSPC, StoreError), (errno.EROFS, StoreError), (errno.EIO, OSError)):
        def crash(self: Path, data: bytes, code: int = code) -> int:
            real(self, data[:1])  # part of it reached the disk
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(Path, "write_bytes", crash)
        with pytest.raises(kind) as caught:
            storage.write_text(target, "new")
        monkeypatch.undo()
        assert type(caught.value) is kind
        assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["m.json"]
        if kind is StoreError:
            assert caught.value.exit_code == 5 and str(caught.value) == (
                f"writing {str(target)!r} failed: {os.strerror(code)}. Hint: free disk space "
                "or make the directory writable; the job can be resumed")
    storage.write_text(target, "new")
    assert target.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["m.json"]


def test_npz_round_trip_local_and_s3(tmp_path: Path, local_s3: LocalS3) -> None:
    arrays = {"a": np.arange(7, dtype=np.int64), "b": np.eye(3), "s": np.array('[[1, "x"]]')}
    root = storage.location(local_s3.bucket("npz"))
    for path in (tmp_path / "x.npz", root / "dir" / "x.npz"):
        storage.save_npz(path, **arrays)
        back = storage.load_npz(path)
        assert back.keys() == arrays.keys()
        for key, value in arrays.items():
            assert np.array_equal(back[key], value) and back[key].dtype == value.dtype


def test_object_store_files(local_s3: LocalS3) -> None:
    root = storage.location(local_s3.bucket("files")) / "job"
    assert not root.exists() and not (root / "manifest.json").exists()
    storage.makedirs(root / "parts")  # nothing to create on an object store
    storage.write_text(root / "parts" / "a.jsonl", "{}\n")
    storage.touch(root / "parts" / "a.done")
    assert (root / "parts" / "a.done").exists() and (root / "parts").is_dir()
    assert (root / "parts" / "a.jsonl").read_text() == "{}\n"
    size, stamp = storage.version_key(root / "parts" / "a.jsonl")
    storage.write_text(root / "parts" / "a.jsonl", "{}\n{}\n")
    assert storage.version_key(root / "parts" / "a.jsonl")[0] == size + 3
    assert storage.version_key(root / "parts" / "a.jsonl") != (size, stamp)
    storage.remove_tree(root / "parts")
    storage.remove_tree(root / "parts")  # already gone: fine
    assert not (root / "parts" / "a.done").exists()


def test_markers_written_by_another_client_are_seen(local_s3: LocalS3) -> None:
    """Listings are never cached: a marker another process writes after we listed shows."""
    root = storage.location(local_s3.bucket("markers")) / "job"
    storage.write_text(root / "parts" / "a.done", "")
    assert [p.name for p in (root / "parts").iterdir()] == ["a.done"]
    import s3fs

    other = s3fs.S3FileSystem(skip_instance_cache=True)
    other.pipe_file("markers/job/parts/b.done", b"")
    assert (root / "parts" / "b.done").exists()


def test_zarr_shards_on_s3_equal_local(tmp_path: Path, local_s3: LocalS3) -> None:
    data = np.random.default_rng(0).random((10, 3, 2, 2)).astype(np.float32)
    places = [tmp_path / "a.zarr", storage.location(local_s3.bucket("zarr")) / "a.zarr"]
    for place in places:
        arrays.create_image_array(place, "x", data.shape, "float32", 4, 2)
        for shard in (2, 0):
            arrays.write_shard(place, "x", shard, 4, data[shard * 4:(shard + 1) * 4])
        assert arrays.done_shards(place, "x").tolist() == [True, False, True]
        got = arrays.open_array(place, "x")[:]
        assert np.array_equal(got[:4], data[:4]) and np.array_equal(got[8:], data[8:])
        assert not got[4:8].any()
    assert arrays.done_shards(str(places[1]), "x").tolist() == [True, False, True]


def test_list_files_any_depth_sorted_hidden_skipped(tmp_path: Path, local_s3: LocalS3) -> None:
    """list_files gives every non-hidden file at any depth, sorted, the same locally and on
    S3; a local symlink cycle ends and a missing root lists nothing."""
    tree = tmp_path / "tree"
    for name in ("b/z.txt", "a.txt", "b/c/d.txt", ".hid/x.txt", "b/.y", "a b/q.txt"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    expected = ["a b/q.txt", "a.txt", "b/c/d.txt", "b/z.txt"]
    assert storage.list_files(tree) == expected
    os.symlink(tree / "b", tree / "b" / "c" / "loop")  # b/c/loop -> b: a cycle
    assert storage.list_files(tree) == expected
    uri = local_s3.upload(tree / "b", f"{local_s3.bucket('listing')}/t/b")
    local_s3.upload(tree / "a b", f"{local_s3.bucket('listing')}/t/a b")
    local_s3.fs.pipe_file("listing/t/a.txt", b"x")
    local_s3.fs.pipe_file("listing/t/.hid/x.txt", b"x")
    assert storage.list_files(storage.location(uri.rsplit("/", 1)[0])) == expected
    assert storage.list_files(tmp_path / "missing") == []
