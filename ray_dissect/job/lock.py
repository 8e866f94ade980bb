"""One writer per job directory: ``DIR/.lock``, taken with an atomic create.

``run``, ``resume`` and ``report`` hold the lock for as long as they write; ``status`` reads
without it. The lock file is JSON: the holder's host, pid, command, start time and the time of
its last renewal (``renewed``). It is created with ``O_CREAT | O_EXCL`` on a local or mounted
filesystem, and with an exclusive create (``mode="xb"``, a conditional put where the store
supports one, e.g. S3's ``If-None-Match``) on an object store; where a store has no
conditional put, two writers that start within the same second can both win (documented in
``docs/integrity.md``).

A second writer is refused in one line naming the holder. A lock is broken (with a warning)
when its holder is gone: on the same host, its pid no longer exists; on another host, it was
not renewed for :data:`LEASE_SECONDS` (a holder renews it every :data:`RENEW_SECONDS` from a
background thread, so a live job on another node never loses it).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ray_dissect import storage
from ray_dissect.errors import RayDissectError, StoreError
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
LEASE_SECONDS = 600.0
"""A lock held from another host that was not renewed for this long is broken."""
RENEW_SECONDS = 60.0


class JobLockedError(RayDissectError):
    """Another process holds the job directory's lock (exit code 5: DIR cannot be written)."""

    exit_code = 5


def lock_path(root: AnyPath) -> AnyPath:
    """The lock file of a job directory."""
    return root / LOCK_NAME


def _holder(command: str) -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "started": now, "renewed": now, "token": uuid.uuid4().hex}


def _create(path: AnyPath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; whether this call created it."""
    if storage.is_local(path):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    try:
        with path.fs.open(path.path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError):  # no conditional put: check, then write
        if path.exists():
            return False
        storage.write_bytes(path, data)
    return True


def read_holder(root: AnyPath) -> dict[str, Any] | None:
    """The lock's holder, ``None`` when unlocked; ``{}`` for an unreadable lock file."""
    try:
        data = json.loads(storage.read_text(lock_path(root)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def holder_gone(holder: dict[str, Any], now: float | None = None) -> str | None:
    """Why ``holder``'s lock may be broken (its process is gone, or its lease ran out), or
    ``None`` while it may still be writing."""
    if not holder:
        return "the lock file is unreadable"
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return f"process {holder.get('pid')} no longer exists"
        except (PermissionError, ValueError, OverflowError):
            return None
        return None
    age = (now or time.time()) - float(holder.get("renewed") or holder.get("started") or 0)
    if age > LEASE_SECONDS:
        return f"its lease ran out ({age:.0f} s since its last renewal, lease {LEASE_SECONDS:g} s)"
    return None


def describe(holder: dict[str, Any]) -> str:
    """``'ray-dissect run' (pid 12, host h, since 2026-12-07 22:00:00)``."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return (f"'ray-dissect {holder.get('command', '?')}' (pid {holder.get('pid', '?')}, "
            f"host {holder.get('host', '?')}, since {since})")


def acquire(root: AnyPath, command: str) -> dict[str, Any]:
    """Take the lock of ``root`` (created if missing) for ``command``; return the holder record.

    Raises:
        JobLockedError: a live process holds it (one line naming the holder).
        StoreError: the directory cannot be written.
    """
    me = _holder(command)
    payload = json.dumps(me).encode()
    try:
        storage.makedirs(root)
        for _ in range(3):
            if _create(lock_path(root), payload):
                return me
            _break_if_gone(root)
    except OSError as err:
        raise StoreError(f"cannot lock the output directory {str(root)!r}: "
                         f"{err.strerror or err}", hint="choose a writable --out") from None
    raise JobLockedError(f"output directory {str(root)!r}: another process took its lock",
                         hint="another run started at the same time; wait for it to end")


def _break_if_gone(root: AnyPath) -> None:
    """Remove the lock of ``root`` if its holder is gone (with a warning), else refuse."""
    holder = read_holder(root)
    if holder is None:
        return  # released meanwhile
    reason = holder_gone(holder)
    if reason is None:
        raise JobLockedError(
            f"output directory {str(root)!r} is in use by {describe(holder)}",
            hint="wait for it to end (`ray-dissect status DIR`), or stop it; a lock whose "
                 f"process is gone is broken automatically ({lock_path(root)})")
    log.warning("breaking the lock of %s held by %s: %s", root, describe(holder), reason)
    storage.remove_tree(lock_path(root))


def release(root: AnyPath, me: dict[str, Any]) -> None:
    """Remove the lock if this holder still holds it."""
    holder = read_holder(root)
    if holder is not None and holder.get("token") == me["token"]:
        storage.remove_tree(lock_path(root))


def _renew(root: AnyPath, me: dict[str, Any], stop: threading.Event) -> None:
    """Rewrite ``renewed`` every :data:`RENEW_SECONDS` while this holder holds the lock."""
    while not stop.wait(RENEW_SECONDS):
        holder = read_holder(root)
        if holder is None or holder.get("token") != me["token"]:
            log.error("the lock of %s was taken by %s", root, describe(holder or {}))
            return
        me["renewed"] = time.time()
        try:
            storage.write_text(lock_path(root), json.dumps(me))
        except OSError as err:
            log.warning("cannot renew the lock of %s: %s", root, err)


@contextmanager
def job_lock(root: AnyPath, command: str) -> Iterator[dict[str, Any]]:
    """Hold the lock of ``root`` for the block (see :func:`acquire`), renewing it meanwhile."""
    me = acquire(root, command)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(root, me, stop), daemon=True,
                               name="job-lock")
    renewer.start()
    try:
        yield me
    finally:
        stop.set()
        renewer.join()
        release(root, me)
