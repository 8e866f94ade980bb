"""Terminal output of a run: progress bars per stage and the results table."""

from __future__ import annotations

from typing import Any


class RichProgress:
    """Progress bars per stage (rich), fed by the driver."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._bar = Progress("[bold]{task.description:<12}", BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), transient=False)
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
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


def table_console() -> Any:
    """A rich console: the terminal's, or without one (a log, a pipe) one so wide that no
    table row is cut or wrapped (rich would assume 80 columns)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def print_summary(summary: Any, target: str) -> None:
    """The results table of a finished job (one row per layer) and where its files are."""
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
    console = table_console()
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
