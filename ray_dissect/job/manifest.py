"""The job directory's manifest: what a job is, and how far each stage got.

``DIR/manifest.json`` holds the spec hash, the package version, one hash per stage (of the
part of the spec that stage's output depends on) and per-stage progress: work units done of
total, the units computed by the current run, elapsed seconds, bad samples. It is rewritten
atomically (temporary file, then rename) as work units finish, so ``ray-dissect status`` can
read it while a job runs. Completion itself is recorded by done markers next to each stage's
output (:mod:`ray_dissect.storage.arrays`, :mod:`ray_dissect.job.layout`), never inferred
from the manifest, so a killed driver loses at most its in-flight work units. Which stages
there are, and what their hashes cover, is the stage table's (:mod:`ray_dissect.pipeline`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ray_dissect import storage
from ray_dissect.errors import StoreError
from ray_dissect.storage import AnyPath


class StageState(BaseModel):
    """Progress of one stage.

    ``breakdown`` (stages that time their work units, e.g. extraction): seconds per step
    (decode, forward, copy, write, wait) summed over the work units computed in this
    directory; absent in manifests of earlier versions and for other stages.
    """

    model_config = ConfigDict(extra="forbid")

    hash: str
    total: int = 0
    done: int = 0
    computed: int = Field(0, description="work units computed by the latest run")
    seconds: float = 0.0
    errors: int = 0
    state: Literal["pending", "running", "done"] = "pending"
    breakdown: dict[str, float] | None = None


class RunInfo(BaseModel):
    """One invocation of ``run``/``resume`` on this directory.

    ``timings``: the run's fixed costs in seconds, in the order they happened (start-up:
    ``process``, ``preflight``, ``prepare``, ``ray_init``; per stage ``STAGE.plan``,
    ``STAGE.start`` (until the first result: workers or actors starting, model load),
    ``STAGE.finish``; actors' ``STAGE.actor_spawn`` and ``STAGE.model_load``, the slowest
    actor's); empty in manifests of earlier versions.
    """

    model_config = ConfigDict(extra="forbid")

    started: float
    finished: float | None = None
    host: str
    pid: int
    status: Literal["running", "finished", "failed", "interrupted"] = "running"
    error: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)


class Manifest(BaseModel):
    """The state of a job directory."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    spec_hash: str
    package_version: str
    stages: dict[str, StageState]
    runs: list[RunInfo] = Field(default_factory=list)


def new_manifest(spec_hash: str, stage_hashes: dict[str, str], version: str) -> Manifest:
    """A manifest with every stage pending (``stage_hashes`` in stage order)."""
    return Manifest(spec_hash=spec_hash, package_version=version,
                    stages={s: StageState(hash=h) for s, h in stage_hashes.items()})


def read_manifest(root: AnyPath) -> Manifest | None:
    """The manifest of a job directory, or None when there is none.

    Raises:
        StoreError: the manifest exists but is not a readable manifest (one line, exit 5).
    """
    try:
        return Manifest.model_validate_json(storage.read_text(root / "manifest.json"))
    except FileNotFoundError:
        return None
    except (ValidationError, UnicodeDecodeError, OSError) as err:
        raise StoreError(f"{str(root / 'manifest.json')!r} is corrupt ({_first_line(err)})",
                         expected="the manifest a `ray-dissect run` writes",
                         hint="`ray-dissect resume DIR` rebuilds it from DIR/spec.json and the "
                              "done markers") from None


def _first_line(err: Exception) -> str:
    """The first line of an error's message, without pydantic's URL lines."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def write_manifest(root: AnyPath, manifest: Manifest) -> None:
    """Replace the manifest atomically."""
    storage.write_text(root / "manifest.json", manifest.model_dump_json(indent=2) + "\n")


def start_run(manifest: Manifest) -> RunInfo:
    """Record a new run (this process) in the manifest and return it."""
    run = RunInfo(started=time.time(), host=socket.gethostname(), pid=os.getpid())
    manifest.runs.append(run)
    for stage in manifest.stages.values():
        stage.computed = 0
    return run
