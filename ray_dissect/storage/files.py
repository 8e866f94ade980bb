"""Where a job reads and writes: local paths, or fsspec URIs (``s3://``, ``gs://``, ...).

A *location* is a :class:`pathlib.Path` for local paths (and ``file://`` URIs), or a
:class:`upath.UPath` for any other fsspec protocol. Both offer the pathlib subset the stages
use (``/``, ``name``, ``parent``, ``with_suffix``, ``exists``, ``is_dir``, ``iterdir``,
``read_bytes``, ``open``); the functions here cover what differs between a local disk and an
object store:

- writes are *atomic*: a local file is written beside its target and renamed over it; an
  object-store object is uploaded in one request, which publishes it whole or not at all;
- reads are one request (:func:`read_bytes`), so a file another process replaces meanwhile
  is read whole, old or new (s3fs's ranged reads fail when the object changes under them);
- object stores have no directories, so :func:`makedirs` does nothing there;
- :func:`list_files` lists a tree at any depth (one recursive listing on object stores);
- listings are not cached (``use_listings_cache=False``): every process of a job polls done
  markers that other processes write, and a cached listing would hide them.

Credentials and endpoints come from the usual fsspec/cloud configuration of each process
(environment variables such as ``AWS_ACCESS_KEY_ID`` / ``AWS_ENDPOINT_URL``, or ``FSSPEC_S3``
= a JSON dict of ``s3fs.S3FileSystem`` arguments, or ``~/.config/fsspec/*.json``), never from
the job spec: a spec is hashed, stored in the job directory and shipped to clusters.
The protocol's package must be installed on every node (``s3fs`` for ``s3://``, ``gcsfs`` for
``gs://``); ``pip install 'ray-dissect[s3]'`` adds s3fs.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from typing_extensions import TypeIs

from ray_dissect.errors import StoreError

if TYPE_CHECKING:
    from upath import UPath

    AnyPath = Path | UPath
else:
    AnyPath = Any

LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
UNWRITABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""``errno`` values of a full or read-only disk: the output is unwritable (exit 5)."""


def is_uri(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` names a non-local fsspec location (``s3://...``; not ``file://``)."""
    scheme, sep, _ = os.fspath(text).partition("://")
    return bool(sep) and scheme.lower() not in LOCAL_PROTOCOLS


def location(target: str | os.PathLike[str] | AnyPath) -> AnyPath:
    """The location ``target`` names: a Path for local paths and ``file://``, else a UPath.

    Raises:
        StoreError: the URI's protocol is unknown or its package is not installed.
    """
    if isinstance(target, Path):
        return target
    if hasattr(target, "storage_options"):
        return cast("UPath", target)  # already a UPath
    text = os.fspath(target)
    if text.lower().startswith(("file://", "local://")):
        return Path(text.partition("://")[2])
    if not is_uri(text):
        return Path(text)
    from upath import UPath

    try:
        return UPath(text, use_listings_cache=False)
    except (ImportError, ValueError) as err:
        scheme = text.partition("://")[0]
        raise StoreError(f"cannot open {text!r}: {err}",
                         expected="a local path or an fsspec URI whose package is installed",
                         hint=f"install the fsspec implementation of '{scheme}://' (s3fs for "
                              "s3://, gcsfs for gs://) on every node") from None


def is_local(path: AnyPath) -> TypeIs[Path]:
    """Whether ``path`` is on a local (or locally mounted) filesystem."""
    return isinstance(path, Path)


def makedirs(path: AnyPath) -> None:
    """Create a directory and its parents (nothing to do on object stores)."""
    if is_local(path):
        path.mkdir(parents=True, exist_ok=True)


def write_bytes(path: AnyPath, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (readers see the old or the new whole file).

    A full or read-only disk is a :class:`StoreError` naming the file (the old file, if any,
    stays whole and no temporary is left); other failures propagate as they are.
    """
    try:
        _replace(path, data)
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        raise unwritable(f"writing {str(path)!r}", err) from None


def unwritable(what: str, err: OSError, name_file: bool = False) -> StoreError:
    """The one-line error of a full or read-only disk (``err.errno`` in :data:`UNWRITABLE`)
    while doing ``what``, wherever it happened (this process or a Ray task); ``name_file``
    adds the file the error names, when ``what`` does not say it."""
    where = f" ({err.filename})" if name_file and err.filename else ""
    return StoreError(f"{what} failed: {err.strerror}{where}",
                      hint="free disk space or make the directory writable; "
                           "the job can be resumed")


def _replace(path: AnyPath, data: bytes) -> None:
    if not is_local(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: AnyPath, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode())


def remove_temporaries(root: AnyPath) -> list[str]:
    """Remove the temporaries :func:`write_bytes` left under a local ``root`` when its writer
    was killed (``.NAME.PID.tmp``); returns their relative paths (nothing on object stores,
    whose writes leave none). Call it only while no other process writes under ``root``."""
    if not is_local(root) or not root.is_dir():
        return []
    stale = [p for p in root.rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return sorted(p.relative_to(root).as_posix() for p in stale)


def touch(path: AnyPath) -> None:
    """Create an empty marker file."""
    write_bytes(path, b"")


def remove_tree(path: AnyPath) -> None:
    """Remove a file or directory tree; a missing one is fine."""
    if is_local(path):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        return
    try:
        path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass


def read_bytes(path: AnyPath) -> bytes:
    """The whole content of a file, read in one request.

    Raises:
        OSError: (FileNotFoundError) the file does not exist or cannot be read.
    """
    return path.read_bytes() if is_local(path) else bytes(path.fs.cat_file(path.path))


def read_text(path: AnyPath) -> str:
    """The whole content of a UTF-8 text file, read in one request."""
    return read_bytes(path).decode()


def list_files(root: AnyPath) -> list[str]:
    """Every file under ``root``, at any depth, as sorted ``/``-separated relative paths.

    Hidden entries (a path component starting with ``.``) are left out. Locally, symlinked
    directories are followed, each real directory once (so a link cycle ends). On an object
    store this is one recursive listing (``fs.find``). A missing ``root`` lists nothing.
    """
    if is_local(root):
        return sorted(_walk_local(root))
    base = root.path.rstrip("/")
    found = (str(p)[len(base):].lstrip("/") for p in root.fs.find(base, withdirs=False))
    return sorted(p for p in found if p and not any(c.startswith(".") for c in p.split("/")))


def _walk_local(root: Path) -> list[str]:
    """Relative paths of the non-hidden files under ``root`` (unsorted)."""
    out: list[str] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        out += [(rel / f).as_posix() for f in files if not f.startswith(".")]
    return out


def save_npz(path: AnyPath, **arrays: np.ndarray) -> None:
    """Write arrays as an ``.npz`` file atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    write_bytes(path, buffer.getvalue())


def load_npz(path: AnyPath) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file (no pickles)."""
    with np.load(readable(path), allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def readable(path: AnyPath) -> Path | io.BytesIO:
    """Something a decoder (PIL, numpy) can open: the path itself, or the object's bytes.

    Raises:
        OSError: the file cannot be read.
    """
    return path if is_local(path) else io.BytesIO(read_bytes(path))


def version_key(path: AnyPath) -> tuple[int, str]:
    """(size, modification stamp) of a file, to notice that it was rewritten.

    Raises:
        OSError: the file does not exist or cannot be reached.
    """
    if is_local(path):
        stat = path.stat()
        return stat.st_size, str(stat.st_mtime_ns)
    info = path.fs.info(path.path)
    stamp = info.get("ETag") or info.get("LastModified") or info.get("mtime") or ""
    return int(info.get("size") or 0), str(stamp)


def zarr_args(path: AnyPath | str) -> dict[str, Any]:
    """Keyword arguments that make ``zarr.open_group``/``open_array`` open ``path``."""
    path = location(path)
    if is_local(path):
        return {"store": str(path)}
    return {"store": str(path), "storage_options": dict(path.storage_options)}
