"""Content fingerprints of the files a model is built from, for the spec hash.

The spec hash (and every stage hash from activations on) covers the model by content, not by
the paths naming it, so editing a factory file or replacing a checkpoint makes a new job,
and a copy of the same file hashes the same wherever it lies. In the hashed spec data:

- ``factory: path/file.py:fn`` becomes ``{"file_sha256": SHA256, "function": "fn"}``, the
  sha256 of the file's bytes (read on every hash: factory files are small). A submitted job
  runs a shipped copy of that file as a module (``rd_factory_<stem>:fn``) and records the
  copy's sha256 in ``model.factory_sha256``; that spec hashes to the same value.
- ``factory: pkg.mod:fn`` (an installed module) and torchvision models stay as they are.
- ``weights: {checkpoint: PATH}`` becomes ``{"checkpoint": {"sha256": SHA256, "size": N}}``.
  The digest is computed once and cached beside the checkpoint in ``PATH.sha256.json``
  (``size``, ``mtime_ns``, ``sha256``), recomputed when the size or modification time
  differ; where that directory is not writable, the digest is computed on each use without
  caching (logged once).

A file that cannot be read where the hash is computed (a checkpoint or factory that only the
cluster sees, hashed for a submission id on another machine) is named by its path instead:
``{"unreadable": "/abs/path"}``, with a warning logged once. That value never reaches a job
directory's manifest: a run builds the model (reading both files) before it hashes the spec,
and fails if it cannot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256.json"
CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of the file's bytes, as 64 hex digits (read in 1 MiB chunks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def is_file_factory(factory: str) -> bool:
    """Whether ``factory`` names a Python file (``path/file.py:fn``), not a module."""
    return factory.rpartition(":")[0].endswith(".py")


@cache
def _warn_once(message: str) -> None:
    """Log ``message`` as a warning, once per process (a spec is hashed several times)."""
    log.warning(message)


def _unreadable(kind: str, path: Path, err: OSError) -> dict[str, str]:
    _warn_once(f"cannot read {kind} {str(path)!r} here to hash its content "
               f"({err.strerror or err}); the spec hash names it by its path instead")
    return {"unreadable": str(path)}


def sidecar(checkpoint: Path) -> Path:
    """Where the checkpoint's digest is cached: ``PATH.sha256.json`` beside it."""
    return checkpoint.with_name(checkpoint.name + SIDECAR_SUFFIX)


def _cached(checkpoint: Path, stat: os.stat_result) -> str | None:
    """The cached digest if the sidecar exists and matches the file's size and mtime."""
    try:
        data = json.loads(sidecar(checkpoint).read_text())
    except (OSError, ValueError):
        return None
    digest = data.get("sha256") if isinstance(data, dict) else None
    fresh = (isinstance(digest, str) and len(digest) == 64
             and data.get("size") == stat.st_size and data.get("mtime_ns") == stat.st_mtime_ns)
    return digest if fresh else None


def _store(checkpoint: Path, stat: os.stat_result, digest: str) -> None:
    """Write the sidecar atomically (a temporary file renamed over it); log once if the
    directory is not writable."""
    text = json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest})
    target = sidecar(checkpoint)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as err:
        _warn_once(f"cannot cache the sha256 of checkpoint {str(checkpoint)!r} in "
                   f"{str(target)!r} ({err.strerror or err}); hashing it on every use")


def checkpoint_fingerprint(checkpoint: Path) -> dict[str, Any]:
    """``{"sha256": ..., "size": N}`` of a checkpoint, from its sidecar cache when fresh.

    Returns ``{"unreadable": PATH}`` when the file cannot be read here (see the module doc).
    """
    try:
        stat = checkpoint.stat()
        digest = _cached(checkpoint, stat)
        if digest is None:
            digest = file_sha256(checkpoint)
            _store(checkpoint, stat, digest)
    except OSError as err:
        return _unreadable("checkpoint", checkpoint, err)
    return {"sha256": digest, "size": stat.st_size}


def factory_fingerprint(factory: str, recorded: str | None = None) -> Any:
    """What the hash covers of ``factory``: a file factory by its file's sha256 and function
    name; a module factory with a ``recorded`` sha256 (a shipped copy) likewise; any other
    module factory by its name (returned unchanged)."""
    target, _, func = factory.rpartition(":")
    if recorded is not None:
        return {"file_sha256": recorded, "function": func}
    if not is_file_factory(factory):
        return factory
    try:
        return {"file_sha256": file_sha256(Path(target)), "function": func}
    except OSError as err:
        return _unreadable("model factory file", Path(target), err)
