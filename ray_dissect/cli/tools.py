"""Commands around a job: layers, compare, compare-search, show, schema, make-dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ray_dissect.cli.common import app, fail, setup_logging
from ray_dissect.errors import RayDissectError


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
    setup_logging(False)
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
        fail(err)


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
    setup_logging(False)
    try:
        if formulas:
            _compare_formulas(trained, baseline, out)
        if visual:
            from ray_dissect.report.compare_page import write_compare_page

            path = write_compare_page(trained, baseline, page, images, layer_a, layer_b)
            typer.echo(f"wrote {path}")
    except RayDissectError as err:
        fail(err)


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
    setup_logging(False)
    try:
        from ray_dissect import storage
        from ray_dissect.studies.search_compare import compare_search as compare

        report = compare(job)
        target = storage.location(out) if out else (
            storage.location(job) / "studies" / "compare_search.json")
        storage.makedirs(target.parent)
        storage.write_text(target, report.model_dump_json(indent=2) + "\n")
    except RayDissectError as err:
        fail(err)
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
    setup_logging(False)
    try:
        from ray_dissect.results.show import show_unit

        for path in show_unit(job_dir, layer, unit, images, out):
            typer.echo(f"wrote {path}")
    except RayDissectError as err:
        fail(err)


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
    setup_logging(True)
    from ray_dissect.datasets.synthetic.generate import generate_dataset

    try:
        generate_dataset(root, images, seed, image_size=image_size, mask_size=mask_size,
                         vocabulary=vocabulary)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {images} images to {root}")
