"""Commands on a local job directory: run, resume and report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ray_dissect.cli.common import NO_REPORT, app, fail, interrupted, setup_logging
from ray_dissect.cli.output import RichProgress, print_summary
from ray_dissect.errors import RayDissectError


def _report(target: str, out: str | None = None, style: str = "default",
            tile: int | None = None, unit_pages: str = "all", address: str | None = None
            ) -> None:
    """Build the static report of a job directory (tiles on Ray) and say where it is."""
    from ray_dissect.report.meta import ReportOptions
    from ray_dissect.runtime.report import build_report_on_ray

    options = ReportOptions(style=style, tile=tile, unit_pages=unit_pages)  # type: ignore[arg-type]
    with RichProgress() as progress:
        result = build_report_on_ray(target, out, options, address, progress)
    typer.echo(f"report: {result.index} ({result.pages} pages, {result.seconds:.1f} s)")


def _run_and_report(spec: Any, out: str, address: str | None, force: bool, no_report: bool
                    ) -> None:
    """Run (or resume) the job with progress bars, print its summary, build its report."""
    from ray_dissect.runtime.driver import run_job

    with RichProgress() as progress:
        summary = run_job(spec, out, address=address, progress=progress, force=force)
    print_summary(summary, out)
    if not no_report:
        _report(out, address=address)


@contextmanager
def _one_line(out: str) -> Iterator[None]:
    """Errors the user can fix as one line with their exit code; Ctrl-C says how to resume."""
    try:
        yield
    except RayDissectError as err:
        fail(err)
    except KeyboardInterrupt:
        interrupted(out)


@app.command()
def run(job: Annotated[Path, typer.Argument(help="job spec YAML")],
        out: Annotated[str, typer.Option(
            "--out", help="job directory for all outputs: a path or an fsspec URI (s3://...)")],
        address: Annotated[str | None, typer.Option(help="Ray address; default: local")] = None,
        force: Annotated[bool, typer.Option(
            help="reuse --out even if it holds another spec: redo only the stages it changes")]
        = False,
        no_report: Annotated[bool, NO_REPORT] = False,
        verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False) -> None:
    """Run a dissection job end to end, print what the units detect, build the report."""
    setup_logging(verbose)
    with _one_line(out):
        from ray_dissect.spec import load_spec

        _run_and_report(load_spec(job), out, address, force, no_report)


@app.command()
def resume(out: Annotated[str, typer.Argument(
               help="job directory of an earlier run (path or fsspec URI)")],
           address: Annotated[str | None, typer.Option(help="Ray address; default: local")]
           = None,
           no_report: Annotated[bool, NO_REPORT] = False,
           verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False) -> None:
    """Continue an interrupted job from its directory (same spec, finished work kept)."""
    setup_logging(verbose)
    with _one_line(out):
        _run_and_report(_saved_spec(out), out, address, False, no_report)


def _saved_spec(out: str) -> Any:
    """The validated spec a job directory was run with (its ``spec.json``)."""
    from pydantic import ValidationError

    from ray_dissect.errors import SpecError
    from ray_dissect.spec import JobSpec
    from ray_dissect.storage import location, read_text

    spec_file = location(out) / "spec.json"
    if not spec_file.is_file():
        raise SpecError(f"{str(out)!r} is not a job directory (no spec.json)",
                        hint="give the --out directory of a `ray-dissect run`")
    try:
        return JobSpec.model_validate_json(read_text(spec_file))
    except (ValidationError, UnicodeDecodeError) as err:
        raise SpecError(f"{str(spec_file)!r} is not a valid job spec "
                        f"({str(err).splitlines()[0]})", hint="run the job again with "
                        "its YAML: `ray-dissect run JOB.yaml --out DIR`") from None


@app.command()
def report(target: Annotated[str, typer.Argument(
               help="job directory (path or fsspec URI), finished or partial")],
           out: Annotated[str | None, typer.Option(
               "--out", help="report directory; default DIR/report")] = None,
           style: Annotated[str, typer.Option(
               help="tiles: 'default' (contour, 3 views) or 'ndl' (NetDissect-Lite's strip)")]
           = "default",
           tile: Annotated[int | None, typer.Option(help="full-size tile side, px")] = None,
           unit_pages: Annotated[str, typer.Option(
               help="'all' units get a page, or only 'interpretable' ones")] = "all",
           address: Annotated[str | None, typer.Option(
               help="Ray address for the tile tasks; default: a local cluster")] = None,
           verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False) -> None:
    """Build the static HTML report of a job directory (opens from file://, no network);
    tiles are rendered by Ray tasks per block of units, the pages by this process."""
    setup_logging(verbose)
    try:
        _report(target, out, style, tile, unit_pages, address)
    except RayDissectError as err:
        fail(err)
