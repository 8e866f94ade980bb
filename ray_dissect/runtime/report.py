"""The report's tiles on Ray: one CPU task per block of units; the driver writes the pages."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from ray_dissect.errors import RayDissectError, StoreError
from ray_dissect.job.lock import job_lock
from ray_dissect.job.progress import Progress, QuietProgress
from ray_dissect.pipeline.table import report_pages
from ray_dissect.report.build import RenderCall, Renderer, ReportResult, build_report
from ray_dissect.report.meta import BlockTiles, ReportOptions
from ray_dissect.report.render import render_block
from ray_dissect.results import JobResults, open_job
from ray_dissect.runtime.cluster import ray_session
from ray_dissect.runtime.tasks import run_tasks
from ray_dissect.storage import AnyPath, location


@lru_cache(maxsize=2)
def _results(job_root: str) -> JobResults:
    """A job's results, opened once per worker process (records and dataset are cached)."""
    return open_job(job_root)


def render_task(job_root: str, report_root: str, options: ReportOptions, layer: str,
                units: tuple[int, int], classes: Any, nav: Any) -> BlockTiles:
    """Render one block of units' tiles and unit pages into the report directory."""
    return render_block(_results(job_root), layer, units, location(report_root), options,
                        classes, nav)


def ray_renderer(job_root: str, progress: Progress | None = None) -> Renderer:
    """A renderer for :func:`build_report` that runs every render call as a Ray task
    (``progress`` advances ``report`` as each one finishes)."""
    shown = progress or QuietProgress()

    def render(calls: Sequence[RenderCall], root: AnyPath, options: ReportOptions
               ) -> list[BlockTiles]:
        done: list[BlockTiles] = []

        def finished(_i: int, block: BlockTiles) -> None:
            done.append(block)
            shown.advance("report")

        run_tasks(render_task, [(job_root, str(root), options, *call) for call in calls], 1.0,
                  "report block", finished, name="report_task")
        return done

    return render


def build_report_on_ray(target: str | Path | AnyPath, out: str | Path | AnyPath | None = None,
                        options: ReportOptions | None = None, address: str | None = None,
                        progress: Progress | None = None) -> ReportResult:
    """Build a job directory's report with its tiles rendered by Ray tasks (a running session
    is reused, else ``address`` is joined or a local cluster started)."""
    results = open_job(target)
    (options or ReportOptions()).tile_style()  # bad options: one line, before Ray starts
    try:
        with job_lock(results.root, "report"), ray_session(address):
            return build_report(results, out, options,
                                renderer=ray_renderer(str(results.root), progress),
                                pages=report_pages(), progress=progress)
    except RayDissectError:
        raise
    except OSError as err:  # e.g. the disk filled up while writing pages or tiles
        raise StoreError(f"cannot write the report of {str(results.root)!r}: "
                         f"{err.strerror or err}", hint="free some space or give a writable "
                         "--out; `ray-dissect report DIR` builds it again") from None
