"""Stage progress: shown by the CLI and kept current in the job's manifest on disk."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from ray_dissect.job.manifest import Manifest, write_manifest
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)


class Progress(Protocol):
    """Receives stage progress (the CLI shows it; tests pass nothing)."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, stage: str, n: int = 1) -> None: ...


class QuietProgress:
    """Progress that only logs each stage's size."""

    def start(self, stage: str, total: int) -> None:
        log.info("stage %s: %d work units", stage, total)

    def advance(self, stage: str, n: int = 1) -> None:
        pass


class Tracker:
    """Forwards progress to the display and keeps the manifest up to date on disk.

    ``start(stage, total, done)`` opens a stage with ``done`` units already finished by
    earlier runs; ``unit_done`` counts units computed by this run and adds their time
    breakdown (seconds per step) to the stage's. ``record`` and ``timed`` keep the run's fixed
    costs (start-up, per-stage overheads) in the latest run's ``timings``.
    """

    def __init__(self, root: AnyPath, manifest: Manifest, progress: Progress) -> None:
        self.root, self.manifest, self.progress = root, manifest, progress
        self._t0: dict[str, float] = {}

    def start(self, stage: str, total: int, done: int) -> None:
        state = self.manifest.stages[stage]
        state.total, state.done, state.state = total, done, "running"
        self._t0[stage] = time.perf_counter() - state.seconds
        self.progress.start(stage, total)
        self.progress.advance(stage, done)
        write_manifest(self.root, self.manifest)

    def unit_done(self, stage: str, n: int = 1,
                  breakdown: dict[str, float] | None = None) -> None:
        if n == 0 and not breakdown:
            return
        state = self.manifest.stages[stage]
        if breakdown:
            state.breakdown = _summed(state.breakdown or {}, breakdown)
        state.done += n
        state.computed += n
        state.seconds = time.perf_counter() - self._t0[stage]
        self.progress.advance(stage, n)
        write_manifest(self.root, self.manifest)

    def skip(self, stage: str) -> None:
        """A stage this job's method does not use: done, with nothing to show."""
        self.manifest.stages[stage].state = "done"
        write_manifest(self.root, self.manifest)

    def record(self, key: str, seconds: float) -> None:
        """Add ``seconds`` to the latest run's timing ``key`` (and write the manifest)."""
        self.record_all({key: seconds})

    def record_all(self, seconds: Mapping[str, float]) -> None:
        """Add each of ``seconds`` to the latest run's timing of its key; one manifest write."""
        timings = self.manifest.runs[-1].timings
        for key, value in seconds.items():
            timings[key] = timings.get(key, 0.0) + value
        write_manifest(self.root, self.manifest)

    @contextmanager
    def timed(self, key: str) -> Iterator[None]:
        """Record the block's wall seconds as timing ``key`` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.record(key, time.perf_counter() - t0)

    def finish(self, stage: str, errors: int = 0) -> float:
        state = self.manifest.stages[stage]
        state.state, state.errors = "done", errors
        state.seconds = time.perf_counter() - self._t0[stage]
        write_manifest(self.root, self.manifest)
        return state.seconds


def _summed(total: dict[str, float], more: dict[str, float]) -> dict[str, float]:
    """Per key, ``total`` plus ``more`` (keys in first-seen order)."""
    return {k: total.get(k, 0.0) + more.get(k, 0.0) for k in dict.fromkeys([*total, *more])}


def process_age(stat: Path = Path("/proc/self/stat")) -> float | None:
    """Seconds since this process started (interpreter start-up and imports before the run),
    or None where ``/proc`` does not tell (not Linux)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
