"""The spec hash covers a factory file and a checkpoint by content, with a sidecar cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ray_dissect.errors import SpecError
from ray_dissect.spec import JobSpec, parse_spec
from ray_dissect.spec import fingerprint as fp

DATASET = {"root": "/data/broden"}


def _factory_spec(factory: str, **model: object) -> JobSpec:
    return parse_spec({"model": {"factory": factory, **model}, "layers": ["pool"],
                       "dataset": DATASET})


def _checkpoint_spec(path: Path) -> JobSpec:
    return parse_spec({"model": {"name": "resnet18", "weights": {"checkpoint": str(path)}},
                       "layers": ["layer4"], "dataset": DATASET})


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Count the files whose bytes ``fingerprint`` hashes from now on."""
    calls: list[Path] = []
    real: Callable[[Path], str] = fp.file_sha256

    def counted(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(fp, "file_sha256", counted)
    return calls


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    """A file larger than one read chunk hashes to hashlib's digest of its whole bytes."""
    data = os.urandom(fp.CHUNK + 12345)
    (tmp_path / "f").write_bytes(data)
    assert fp.file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_factory_file_is_hashed_by_content_not_path(tmp_path: Path) -> None:
    """A copy elsewhere hashes the same; an edit, or another function, changes the hash."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = "def build():\n    return None\n"
    (tmp_path / "a" / "net.py").write_text(source)
    (tmp_path / "b" / "other.py").write_text(source)
    spec = _factory_spec(f"{tmp_path}/a/net.py:build")
    assert spec.hash_data()["model"]["factory"] == {
        "file_sha256": hashlib.sha256(source.encode()).hexdigest(), "function": "build"}
    first = spec.spec_hash()
    assert _factory_spec(f"{tmp_path}/b/other.py:build").spec_hash() == first
    assert _factory_spec(f"{tmp_path}/a/net.py:other").spec_hash() != first
    (tmp_path / "a" / "net.py").write_text(source + "# edited\n")
    assert spec.spec_hash() != first  # the same spec object, the file's new content


def test_module_factory_is_hashed_by_name() -> None:
    """A package factory stays in the hash data as written, with no digest field."""
    spec = _factory_spec("ray_dissect.zoo:efficientnet_lite0")
    assert spec.hash_data()["model"]["factory"] == "ray_dissect.zoo:efficientnet_lite0"
    assert "factory_sha256" not in spec.hash_data()["model"]


def test_recorded_sha256_stands_for_the_shipped_file(tmp_path: Path) -> None:
    """A module factory with the file's sha256 hashes as the file factory it was copied from."""
    (tmp_path / "net.py").write_text("def build():\n    return None\n")
    local = _factory_spec(f"{tmp_path}/net.py:build")
    shipped = _factory_spec("rd_factory_net:build",
                            factory_sha256=fp.file_sha256(tmp_path / "net.py"))
    assert shipped.spec_hash() == local.spec_hash()


def test_recorded_sha256_is_refused_beside_a_factory_file(tmp_path: Path) -> None:
    """factory_sha256 with a file factory is a field-named error."""
    with pytest.raises(SpecError, match=r"field 'model': .*factory_sha256 goes only with"):
        _factory_spec(f"{tmp_path}/net.py:build", factory_sha256="0" * 64)


def test_checkpoint_is_hashed_by_content_and_size(tmp_path: Path) -> None:
    """A checkpoint's hash data is its sha256 and size; a copy elsewhere hashes the same."""
    data = b"weights-one"
    (tmp_path / "a.pt").write_bytes(data)
    (tmp_path / "b.pt").write_bytes(data)
    spec = _checkpoint_spec(tmp_path / "a.pt")
    assert spec.hash_data()["model"]["weights"] == {"checkpoint": {
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    assert _checkpoint_spec(tmp_path / "b.pt").spec_hash() == spec.spec_hash()


def test_checkpoint_digest_is_cached_beside_it(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The first hash reads the checkpoint and writes PATH.sha256.json; later hashes of the
    unchanged file read only the sidecar."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights-one")
    calls = _counting(monkeypatch)
    first = _checkpoint_spec(path).spec_hash()
    assert calls == [path]
    stat = path.stat()
    assert json.loads(fp.sidecar(path).read_text()) == {
        "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "sha256": hashlib.sha256(b"weights-one").hexdigest()}
    assert _checkpoint_spec(path).spec_hash() == first
    assert calls == [path]


def test_sidecar_is_refreshed_when_the_checkpoint_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new size, or the same size with a new mtime, rehashes the file and rewrites the
    sidecar; a sidecar whose digest is stale but whose stat matches is believed (by design)."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights-one")
    calls = _counting(monkeypatch)
    first = _checkpoint_spec(path).spec_hash()
    path.write_bytes(b"weights-three")  # another size
    second = _checkpoint_spec(path).spec_hash()
    assert len(calls) == 2 and second != first
    stat = path.stat()
    path.write_bytes(b"weights-four!")  # the same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = _checkpoint_spec(path).spec_hash()
    assert len(calls) == 3 and third not in (first, second)
    assert json.loads(fp.sidecar(path).read_text())["sha256"] == hashlib.sha256(
        b"weights-four!").hexdigest()


def test_unwritable_directory_hashes_without_caching(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Where the sidecar cannot be written the digest is still right, recomputed on each use,
    and the failure is logged once."""
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights-one")

    def refuse(*_a: object, **_k: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fp.tempfile, "mkstemp", refuse)
    calls = _counting(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        hashes = {_checkpoint_spec(path).spec_hash() for _ in range(3)}
    assert len(hashes) == 1 and len(calls) == 3 and not fp.sidecar(path).exists()
    assert _checkpoint_spec(path).hash_data()["model"]["weights"]["checkpoint"]["sha256"] == (
        hashlib.sha256(b"weights-one").hexdigest())
    warned = [r for r in caplog.records if "cannot cache the sha256" in r.getMessage()]
    assert len(warned) == 1 and "Permission denied" in warned[0].getMessage()


def test_unreadable_checkpoint_is_named_by_its_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint this machine cannot read (a cluster-side path) hashes by its path, with
    one warning; the hash changes once the file is readable."""
    path = tmp_path / "cluster-only.pt"
    with caplog.at_level(logging.WARNING, logger=fp.__name__):
        spec = _checkpoint_spec(path)
        assert spec.hash_data()["model"]["weights"] == {
            "checkpoint": {"unreadable": str(path)}}
        unread = spec.spec_hash()
        assert _checkpoint_spec(path).spec_hash() == unread
    warned = [r for r in caplog.records if "cannot read checkpoint" in r.getMessage()]
    assert len(warned) == 1 and "names it by its path" in warned[0].getMessage()
    path.write_bytes(b"weights-one")
    assert spec.spec_hash() != unread
