"""The stage table: the ordered list of every stage's declaration, and what is derived from it.

Each stage module under ``pipeline/stages/`` declares its own :class:`~ray_dissect.pipeline.
stage.Stage` (``STAGE``, or ``STAGES`` for a pair); :data:`STAGES` lists them in the order a
job runs them, one line each. Adding a stage is its module plus one line here. The runtime's
driver and the in-process runner walk :func:`stages` in order; the manifest's stage hashes,
``--force`` (which outputs to remove), ``status`` (which rows to show), the preflight checks
and the report's stage pages read it too. :func:`registered` adds stages for a while (a
test's toy stage, run in-process).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray_dissect.job.manifest import Manifest, new_manifest
from ray_dissect.job.progress import Progress
from ray_dissect.pipeline.stage import Stage
from ray_dissect.pipeline.stages import (
    activations,
    attribution,
    concept_blackout,
    concepts,
    heuristics,
    masking,
    prism,
    ranges_importance,
    receptive_fields,
    scoring,
    threshold_sweep,
    thresholds,
    top_images,
    unit_ablation,
    unit_attribution,
)
from ray_dissect.report.build import Renderer, ReportOptions, ReportResult
from ray_dissect.report.build import build_report as _build
from ray_dissect.report.pages import ReportPage
from ray_dissect.results import JobResults
from ray_dissect.spec import JobSpec
from ray_dissect.spec.base import digest
from ray_dissect.storage import AnyPath

STAGES: tuple[Stage, ...] = (
    concepts.STAGE,
    activations.STAGE,
    attribution.STAGE,
    *prism.STAGES,  # prism_pca, prism
    thresholds.STAGE,
    scoring.STAGE,
    masking.STAGE,
    top_images.STAGE,
    receptive_fields.STAGE,
    unit_attribution.STAGE,
    threshold_sweep.STAGE,
    ranges_importance.STAGE,
    unit_ablation.STAGE,
    *concept_blackout.STAGES,  # concept_blackout_iou, concept_blackout
    heuristics.STAGE,
)
STAGE_NAMES = tuple(s.name for s in STAGES)
_added: list[Stage] = []


def stages() -> tuple[Stage, ...]:
    """The stages a job runs, in order: :data:`STAGES` and those :func:`registered` now."""
    return (*STAGES, *_added)


@contextmanager
def registered(*extra: Stage) -> Iterator[None]:
    """Run jobs with ``extra`` stages after the table's, within the ``with`` block (in this
    process only: Ray workers see :data:`STAGES`, so run such a job in-process)."""
    taken = {s.name for s in stages()} & {s.name for s in extra}
    if taken:
        raise ValueError(f"stage name(s) {sorted(taken)} already in the table")
    _added.extend(extra)
    try:
        yield
    finally:
        del _added[len(_added) - len(extra):]


def stage_names() -> tuple[str, ...]:
    """The names of :func:`stages`, in order."""
    return tuple(s.name for s in stages())


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in stages():
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages: {', '.join(stage_names())}")


def _whole_spec(data: dict[str, Any], owner: Stage) -> dict[str, Any]:
    owned = {section for s in stages() if s is not owner for section in s.owns}
    return {k: v for k, v in data.items() if k not in owned}


def stage_hashes(spec: JobSpec) -> dict[str, str]:
    """Hash, per stage in table order, of everything that stage's output depends on.

    A stage with ``covers`` hashes its own fields and those of every earlier stage that owns
    nothing (stages that own a section are leaves); a stage with ``covers=None`` hashes the
    whole spec without the sections other stages own (the spec hash when none is used). So a
    stage's hash changes exactly when something its output depends on changes.
    """
    data = spec.hash_data()
    inputs: dict[str, Any] = {}
    out: dict[str, str] = {}
    for s in stages():
        if s.covers is None:
            out[s.name] = digest(_whole_spec(data, s))
            continue
        mine = inputs | s.covers(data, spec)
        out[s.name] = digest(mine)
        if not s.owns:
            inputs = mine
    return out


def stale_stages(old: Manifest, spec: JobSpec) -> list[str]:
    """The stages whose inputs changed between ``old`` and ``spec`` (hash differs or the
    stage is new), in table order; since a hash covers everything its stage depends on, a
    stage downstream of a changed one is stale exactly when it depends on the change."""
    new = stage_hashes(spec)
    return [name for name in stage_names()
            if old.stages.get(name) is None or old.stages[name].hash != new[name]]


def job_manifest(spec: JobSpec, version: str) -> Manifest:
    """A new manifest for ``spec``: every stage of the table pending, with its hash."""
    return new_manifest(spec.spec_hash(), stage_hashes(spec), version)


def report_pages() -> tuple[ReportPage, ...]:
    """The pages the stages add to the report, in table order (a page several stages share,
    such as the studies page, once)."""
    pages: dict[str, ReportPage] = {}
    for s in stages():
        if s.report is not None:
            pages.setdefault(s.report.href, s.report)
    return tuple(pages.values())


def build_report(results: JobResults, out: str | Path | AnyPath | None = None,
                 options: ReportOptions | None = None, renderer: Renderer | None = None,
                 progress: Progress | None = None) -> ReportResult:
    """A job's report with every stage's pages (``ray_dissect.build_report``): see
    :func:`ray_dissect.report.build.build_report`, given :func:`report_pages`."""
    return _build(results, out, options, renderer, pages=report_pages(), progress=progress)
