"""Commands on a Ray cluster's Jobs API: submit, status, logs and stop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_dissect.cli.common import JOBS_API_HELP, app, fail, setup_logging
from ray_dissect.errors import RayDissectError


def _watch(job_id: str, address: str) -> str:
    """Stream a submitted job's logs to the terminal; return its final status."""
    from ray_dissect.runtime.submit import watch

    try:
        return watch(job_id, address, on_log=lambda text: typer.echo(text, nl=False))
    except KeyboardInterrupt:
        typer.echo(f"\njob {job_id} keeps running on the cluster: "
                   f"`ray-dissect logs {job_id} --address {address} --follow`, "
                   f"`ray-dissect stop {job_id} --address {address}`", err=True)
        raise typer.Exit(130) from None


@app.command()
def submit(job: Annotated[Path, typer.Argument(help="job spec YAML (absolute data paths)")],
           out: Annotated[str, typer.Option(
               "--out", help="job directory on the cluster: an absolute path every node sees, "
                             "or an fsspec URI (s3://bucket/run)")],
           address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                                help=JOBS_API_HELP)],
           wait: Annotated[bool, typer.Option(help="follow the job's logs until it ends")]
           = False,
           retry: Annotated[bool, typer.Option(
               help="submit again if the job's last run FAILED or was STOPPED")] = False,
           pip: Annotated[list[str] | None, typer.Option(
               "--pip", help="extra pip requirement for the job (repeatable)")] = None,
           env: Annotated[list[str] | None, typer.Option(
               "--env", help="NAME or NAME=VALUE environment variable for the job's "
                             "processes, e.g. an object store's endpoint (repeatable)")] = None,
           verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False) -> None:
    """Submit a job to a running Ray cluster; the same job (spec and --out) runs only once."""
    setup_logging(verbose)
    from ray_dissect.errors import StageError
    from ray_dissect.runtime import submit as jobs

    try:
        job_id, state = jobs.submit(job, out, address, wait=False, extra_pip=pip, retry=retry,
                                    env=env)
        typer.echo(f"job {job_id}: {state}")
        if wait:
            state = _watch(job_id, address)
    except RayDissectError as err:
        fail(err)
    if wait and state != "SUCCEEDED":
        fail(StageError(f"job {job_id} ended {state}",
                         hint=f"see `ray-dissect logs {job_id} --address {address}`; "
                              "--retry runs it again, reusing its finished work"))


@app.command()
def status(target: Annotated[str, typer.Argument(
               help="a job directory, or a submission id with --address")],
           address: Annotated[str | None, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                                       help=JOBS_API_HELP)] = None) -> None:
    """Show a job directory's per-stage progress, or a submitted job's status."""
    try:
        from ray_dissect.storage import is_uri, location

        if address is not None and not is_uri(target) and not Path(target).is_dir():
            from ray_dissect.runtime.submit import status as job_status

            typer.echo(job_status(target, address))
        else:
            from ray_dissect.pipeline.status import render_status

            typer.echo(render_status(location(target)))
    except RayDissectError as err:
        fail(err)


@app.command()
def logs(job_id: Annotated[str, typer.Argument(help="submission id")],
         address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                              help=JOBS_API_HELP)],
         follow: Annotated[bool, typer.Option("--follow", "-f", help="until the job ends")]
         = False) -> None:
    """Print a submitted job's logs."""
    from ray_dissect.runtime.submit import logs as job_logs

    try:
        if follow:
            _watch(job_id, address)
        else:
            typer.echo(job_logs(job_id, address), nl=False)
    except RayDissectError as err:
        fail(err)


@app.command()
def stop(job_id: Annotated[str, typer.Argument(help="submission id")],
         address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                              help=JOBS_API_HELP)]) -> None:
    """Stop a submitted job (its finished work stays in the job directory)."""
    from ray_dissect.runtime.submit import stop as stop_job

    try:
        stopped = stop_job(job_id, address)
    except RayDissectError as err:
        fail(err)
    typer.echo(f"job {job_id}: stop requested" if stopped else f"job {job_id} was not running")
