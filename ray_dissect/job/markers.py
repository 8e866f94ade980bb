"""Done markers of part files that say what they cover, checked before a part is reused.

A part file (a block's records, top images, a study's sums, ...) is marked done by
``PART.done`` written after it. The marker is JSON: ``{"stage": HASH, "sha256": DIGEST}``, the
hash of the stage that wrote the part (:func:`ray_dissect.pipeline.table.stage_hashes`) and
the sha256 of the part's bytes. :func:`verified_done` accepts a marker only when its stage hash
is the current one and the part's bytes still have its digest; otherwise it removes the marker
(with a warning naming the part), so that its work unit is redone.

Markers written before digests existed (ray_dissect 0.1 to 0.3) are empty files: such a
*legacy* marker is accepted when its part exists and is not empty (a part truncated behind a
legacy marker is caught when it is read: see :func:`ray_dissect.records.io.read_unit_records`),
and gets a digest marker the next time the part is written.
"""

from __future__ import annotations

import hashlib
import json
import logging

from ray_dissect import storage
from ray_dissect.job.layout import done_marker
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def mark_done(part: AnyPath, stage_hash: str) -> None:
    """Write ``part``'s done marker: ``stage_hash`` and the digest of its current bytes
    (call it after ``part`` is written whole)."""
    marker = {"stage": stage_hash, "sha256": sha256(storage.read_bytes(part))}
    storage.write_text(done_marker(part), json.dumps(marker, sort_keys=True))


def _problem(part: AnyPath, text: str, stage_hash: str) -> str | None:
    """What is wrong with ``part`` given its marker's ``text`` (``None``: nothing)."""
    try:
        data = storage.read_bytes(part)
    except FileNotFoundError:
        return "its output is missing"
    if not text.strip():
        return None if data else "its output is empty"  # legacy marker: see module docstring
    try:
        marker = json.loads(text)
        stage, digest = marker["stage"], marker["sha256"]
    except (ValueError, KeyError, TypeError):
        return "its done marker is unreadable"
    if stage != stage_hash:
        return f"it was written by stage hash {stage}, this job's is {stage_hash}"
    if sha256(data) != digest:
        return "its output does not match its digest (changed or truncated)"
    return None


def verified_done(part: AnyPath, stage_hash: str) -> bool:
    """Whether ``part`` is done and intact; a marker that does not hold is removed (with a
    warning) so that its work unit is redone."""
    marker = done_marker(part)
    try:
        text = storage.read_text(marker)
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError):
        text = "\0"
    problem = _problem(part, text, stage_hash)
    if problem is None:
        return True
    log.warning("redoing %s: %s", part, problem)
    storage.remove_tree(marker)
    return False
