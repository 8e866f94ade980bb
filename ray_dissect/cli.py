"""The ``ray-dissect`` command line. Each command validates, then hands off to the library.

Errors the user can fix print one line (``error: ...``) and exit with the code of their class
(see the README); anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ray_dissect.errors import RayDissectError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dissect the units of trained CNNs against concept datasets, on Ray.")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("ray_dissect")


def _fail(err: RayDissectError) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(err.exit_code)


def _interrupted(out: str) -> None:
    """Ctrl-C during ``run``/``resume``: say how to go on, exit 130 (what a shell expects)."""
    typer.echo(f"\ninterrupted; resume with `ray-dissect resume {out}`", err=True)
    raise typer.Exit(130)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


class _RichProgress:
    """Progress bars per stage (rich), fed by the driver."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress("[bold]{task.description:<12}", BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), transient=False)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, stage: str, total: int) -> None:
        self._tasks[stage] = self._bar.add_task(stage, total=total)

    def advance(self, stage: str, n: int = 1) -> None:
        self._bar.advance(self._tasks[stage], n)


def _formula_columns(summary: Any, target: str) -> dict[str, tuple[str, str]]:
    """Per layer (most frequent formulas, best formula by IoU) of a compositional job."""
    from ray_dissect.results import open_job

    results = open_job(target)
    out = {}
    for layer in summary.layers:
        frequent = ", ".join(f"{f.text} ({f.ranges})" for f in layer.top_formulas[:4])
        best = results.best_explanations(layer.layer, 1)
        best_text = (f"{best[0][1].text} (unit {best[0][0]}, IoU {best[0][1].iou:.3f})"
                     if best else "-")
        out[layer.layer] = (frequent or "-", best_text)
    return out


def _table_console() -> Any:
    """A rich console: the terminal's, or without one (a log, a pipe) one so wide that no
    table row is cut or wrapped (rich would assume 80 columns)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def _print_summary(summary: Any, target: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ray_dissect.storage import location

    out = location(target)
    formulas = _formula_columns(summary, target) if summary.method not in (
        "netdissect", "none") else {}
    scored = ("no dissection (method none)" if summary.iou_threshold is None
              else f"IoU >= {summary.iou_threshold}")
    table = Table(title=escape(f"{summary.provenance.job}: {summary.valid_images}/"
                               f"{summary.images} images used, {scored}"))
    console = _table_console()
    columns = ["layer", "units", "interpretable", "concepts", "most frequent concepts"]
    if formulas:
        columns += ["explained ranges", "most frequent formulas", "best formula by IoU"]
    for col in columns:  # layer names whole; without a terminal nothing wraps
        table.add_column(col, no_wrap=col == "layer" or not console.is_terminal)
    for layer in summary.layers:
        top = ", ".join(f"{c.name} ({c.units})" for c in layer.top_concepts[:6])
        row = [layer.layer, str(layer.units), str(layer.interpretable),
               str(layer.unique_concepts), top or "-"]
        if formulas:
            row += [str(layer.explained_ranges), *formulas[layer.layer]]
        table.add_row(*(escape(cell) for cell in row))  # user text: labels, layer names
    console.print(table)
    console.print(escape(f"records: {out / 'records'}  summary: {out / 'summary.json'}  "
                         f"bad samples: {summary.bad_samples} ({out / 'errors.jsonl'})"))


def _report(target: str, out: str | None = None, style: str = "default",
            tile: int | None = None, unit_pages: str = "all", address: str | None = None
            ) -> None:
    """Build the static report of a job directory (tiles on Ray) and say where it is."""
    from ray_dissect.report.meta import ReportOptions
    from ray_dissect.runtime.report import build_report_on_ray

    options = ReportOptions(style=style, tile=tile, unit_pages=unit_pages)  # type: ignore[arg-type]
    with _RichProgress() as progress:
        result = build_report_on_ray(target, out, options, address, progress)
    typer.echo(f"report: {result.index} ({result.pages} pages, {result.seconds:.1f} s)")


def _run_and_report(spec: Any, out: str, address: str | None, force: bool, no_report: bool
                    ) -> None:
    """Run (or resume) the job with progress bars, print its summary, build its report."""
    from ray_dissect.runtime.driver import run_job

    with _RichProgress() as progress:
        summary = run_job(spec, out, address=address, progress=progress, force=force)
    _print_summary(summary, out)
    if not no_report:
        _report(out, address=address)


NO_REPORT = typer.Option("--no-report", help="do not build the HTML report (DIR/report/)")


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
    _setup_logging(verbose)
    try:
        from ray_dissect.spec import load_spec

        _run_and_report(load_spec(job), out, address, force, no_report)
    except RayDissectError as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted(out)


@app.command()
def resume(out: Annotated[str, typer.Argument(
               help="job directory of an earlier run (path or fsspec URI)")],
           address: Annotated[str | None, typer.Option(help="Ray address; default: local")]
           = None,
           no_report: Annotated[bool, NO_REPORT] = False,
           verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False) -> None:
    """Continue an interrupted job from its directory (same spec, finished work kept)."""
    _setup_logging(verbose)
    try:
        from pydantic import ValidationError

        from ray_dissect.errors import SpecError
        from ray_dissect.spec import JobSpec
        from ray_dissect.storage import location, read_text

        spec_file = location(out) / "spec.json"
        if not spec_file.is_file():
            raise SpecError(f"{str(out)!r} is not a job directory (no spec.json)",
                            hint="give the --out directory of a `ray-dissect run`")
        try:
            spec = JobSpec.model_validate_json(read_text(spec_file))
        except (ValidationError, UnicodeDecodeError) as err:
            raise SpecError(f"{str(spec_file)!r} is not a valid job spec "
                            f"({str(err).splitlines()[0]})", hint="run the job again with "
                            "its YAML: `ray-dissect run JOB.yaml --out DIR`") from None
        _run_and_report(spec, out, address, False, no_report)
    except RayDissectError as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted(out)


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
    _setup_logging(verbose)
    try:
        _report(target, out, style, tile, unit_pages, address)
    except RayDissectError as err:
        _fail(err)


JOBS_API_HELP = "Ray Jobs API address, http://HEAD:8265 (or env RAY_API_SERVER_ADDRESS)"


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
    _setup_logging(verbose)
    from ray_dissect.errors import StageError
    from ray_dissect.runtime import submit as jobs

    try:
        job_id, state = jobs.submit(job, out, address, wait=False, extra_pip=pip, retry=retry,
                                    env=env)
        typer.echo(f"job {job_id}: {state}")
        if wait:
            state = _watch(job_id, address)
    except RayDissectError as err:
        _fail(err)
    if wait and state != "SUCCEEDED":
        _fail(StageError(f"job {job_id} ended {state}",
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
        _fail(err)


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
        _fail(err)


@app.command()
def stop(job_id: Annotated[str, typer.Argument(help="submission id")],
         address: Annotated[str, typer.Option(envvar="RAY_API_SERVER_ADDRESS",
                                              help=JOBS_API_HELP)]) -> None:
    """Stop a submitted job (its finished work stays in the job directory)."""
    from ray_dissect.runtime.submit import stop as stop_job

    try:
        stopped = stop_job(job_id, address)
    except RayDissectError as err:
        _fail(err)
    typer.echo(f"job {job_id}: stop requested" if stopped else f"job {job_id} was not running")


@app.command()
def layers(job: Annotated[Path | None, typer.Argument(help="job spec YAML")] = None,
           model: Annotated[str | None, typer.Option(help="a torchvision model name")] = None,
           factory: Annotated[str | None, typer.Option(help="'file.py:fn' or 'pkg.mod:fn'")]
           = None,
           size: Annotated[int, typer.Option(help="input size")] = 224,
           select: Annotated[list[str] | None, typer.Option(
               help="layer pattern to try (name, glob 'features.*', 'type:ReLU'); repeatable")]
           = None) -> None:
    """List the model's layers (module names) with their output shapes.

    With a JOB.yaml (or --select), the layers its patterns select are marked with '*'.
    """
    _setup_logging(False)
    try:
        from ray_dissect.models.build import build_model, expand_layers, probe_layers
        from ray_dissect.spec import ModelSpec, load_spec

        patterns = list(select or [])
        if job is not None:
            job_spec = load_spec(job)
            spec, size = job_spec.model, job_spec.model.preprocess.size
            patterns = patterns or list(job_spec.layers)
        elif model or factory:
            spec = ModelSpec(name=model, factory=factory)
        else:
            raise RayDissectError("nothing to list", expected="a JOB.yaml, --model or --factory")
        net = build_model(spec)
        chosen = set(expand_layers(net, patterns)) if patterns else set()
        for name, shape, calls in probe_layers(net, size):
            mark = "* " if name in chosen else "  " if chosen else ""
            shared = f"  runs {calls}x per forward: not a layer to dissect" if calls > 1 else ""
            typer.echo(f"{mark}{name:<50} {' x '.join(map(str, shape))}{shared}")
        if patterns:
            typer.echo(f"{len(chosen)} layers selected by {', '.join(patterns)}")
    except RayDissectError as err:
        _fail(err)


@app.command()
def compare(trained: Annotated[str, typer.Argument(help="job directory of the trained model")],
            baseline: Annotated[str, typer.Argument(
                help="job directory of the baseline model (e.g. random-init)")],
            out: Annotated[str | None, typer.Option(
                "--out", help="JSON file; default TRAINED/studies/compare.json")] = None,
            formulas: Annotated[bool, typer.Option(
                help="compare the formulas (needs explained jobs of the same layers)")] = True,
            visual: Annotated[bool, typer.Option(
                help="write the side-by-side page of filters and feature maps")] = True,
            images: Annotated[int, typer.Option(
                help="images on the page (the dataset's first valid ones)")] = 4,
            layer_a: Annotated[str | None, typer.Option(
                "--layer-a", help="TRAINED's layer shown; default its first")] = None,
            layer_b: Annotated[str | None, typer.Option(
                "--layer-b", help="BASELINE's layer shown; default its first")] = None,
            page: Annotated[str | None, typer.Option(
                "--page", help="page directory; default TRAINED/studies/compare")] = None
            ) -> None:
    """Share of unspecialized and weakly specialized units per range (CCE's
    analyze_activations): formulas of the trained job against the baseline's defaults; and
    a page with both models' first-layer filters and feature maps on the same images."""
    _setup_logging(False)
    try:
        if formulas:
            _compare_formulas(trained, baseline, out)
        if visual:
            from ray_dissect.report.compare_page import write_compare_page

            path = write_compare_page(trained, baseline, page, images, layer_a, layer_b)
            typer.echo(f"wrote {path}")
    except RayDissectError as err:
        _fail(err)


def _compare_formulas(trained: str, baseline: str, out: str | None) -> None:
    from ray_dissect import storage
    from ray_dissect.studies.compare import compare_jobs

    report = compare_jobs(trained, baseline)
    target = storage.location(out) if out else (
        storage.location(trained) / "studies" / "compare.json")
    storage.makedirs(target.parent)
    storage.write_text(target, report.model_dump_json(indent=2) + "\n")
    for layer in report.layers:
        shares = ", ".join(f"range {r.range_index}: {r.unspecialized_share:.2f} / "
                           f"{r.weakly_specialized_share:.2f}" for r in layer.ranges)
        typer.echo(f"{layer.layer}: unspecialized / weakly specialized per range: {shares}")
    typer.echo(f"wrote {target}")


@app.command("compare-search")
def compare_search(job: Annotated[str, typer.Argument(
                       help="job directory of a run with method.search: optimal")],
                   out: Annotated[str | None, typer.Option(
                       "--out", help="JSON file; default JOB/studies/compare_search.json")
                   ] = None) -> None:
    """Per layer, the share of beam formulas that were suboptimal and the IoU they lost."""
    _setup_logging(False)
    try:
        from ray_dissect import storage
        from ray_dissect.studies.search_compare import compare_search as compare

        report = compare(job)
        target = storage.location(out) if out else (
            storage.location(job) / "studies" / "compare_search.json")
        storage.makedirs(target.parent)
        storage.write_text(target, report.model_dump_json(indent=2) + "\n")
    except RayDissectError as err:
        _fail(err)
    for layer in report.layers:
        typer.echo(f"{layer.layer}: {layer.suboptimal}/{layer.explanations} beam formulas "
                   f"suboptimal ({100 * layer.suboptimal_share:.1f} %), IoU lost mean "
                   f"{layer.iou_lost_mean:.4f} max {layer.iou_lost_max:.4f} "
                   f"({100 * layer.relative_lost_max:.1f} % of the optimum); "
                   f"{layer.proved} proved optimal")
    typer.echo(f"wrote {target}")


@app.command()
def show(job_dir: Annotated[str, typer.Argument(help="job directory")],
         images: Annotated[list[Path], typer.Argument(help="image files (PNG, JPEG)")],
         layer: Annotated[str, typer.Option(help="a dissected layer of the job")],
         unit: Annotated[int, typer.Option(help="unit (channel) index")],
         out: Annotated[Path, typer.Option(help="directory for the PNGs")] = Path("show")
         ) -> None:
    """Draw a unit's activation map on chosen images with the job's own model: per image a
    heat overlay and, when the unit has a threshold, the image revealed where it fires."""
    _setup_logging(False)
    try:
        from ray_dissect.results.show import show_unit

        for path in show_unit(job_dir, layer, unit, images, out):
            typer.echo(f"wrote {path}")
    except RayDissectError as err:
        _fail(err)


@app.command()
def schema(out: Annotated[Path, typer.Option("--out", help="directory")] = Path("schemas")
           ) -> None:
    """Write the JSON Schemas of the job spec and of the records."""
    from ray_dissect.records.io import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


@app.command("make-dataset")
def make_dataset(root: Annotated[Path, typer.Argument(help="new directory")],
                 images: Annotated[int, typer.Option(min=1)] = 2000,
                 seed: Annotated[int, typer.Option()] = 0,
                 image_size: Annotated[int, typer.Option(min=16)] = 224,
                 mask_size: Annotated[int, typer.Option(min=4)] = 112,
                 vocabulary: Annotated[str, typer.Option(
                     help="default (112 concepts) or broden (1,197 in Broden's categories)")
                 ] = "default") -> None:
    """Generate a Broden-format concept dataset of procedurally drawn images."""
    _setup_logging(True)
    from ray_dissect.datasets.synthetic.generate import generate_dataset

    try:
        generate_dataset(root, images, seed, image_size=image_size, mask_size=mask_size,
                         vocabulary=vocabulary)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {images} images to {root}")


def main() -> None:
    """Entry point of the ``ray-dissect`` script."""
    app(prog_name="ray-dissect")


if __name__ == "__main__":
    main()
