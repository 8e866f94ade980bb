"""What every command shares: the Typer app, one-line failures, logging and option texts."""

from __future__ import annotations

import logging

import typer

from ray_dissect.errors import RayDissectError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dissect the units of trained CNNs against concept datasets, on Ray.")
NO_REPORT = typer.Option("--no-report", help="do not build the HTML report (DIR/report/)")
JOBS_API_HELP = "Ray Jobs API address, http://HEAD:8265 (or env RAY_API_SERVER_ADDRESS)"


def fail(err: RayDissectError) -> None:
    """Print the error in one line and exit with its class's code."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(err.exit_code)


def interrupted(out: str) -> None:
    """Ctrl-C during ``run``/``resume``: say how to go on, exit 130 (what a shell expects)."""
    typer.echo(f"\ninterrupted; resume with `ray-dissect resume {out}`", err=True)
    raise typer.Exit(130)


def setup_logging(verbose: bool) -> None:
    """Library logs on stderr: INFO with ``--verbose``, else warnings only."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
