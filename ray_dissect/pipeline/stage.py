"""What a stage declares: :class:`Stage`, built once per stage in its module under
``pipeline/stages/`` and listed, in order, in :mod:`ray_dissect.pipeline.table`.

A stage module exports ``STAGE`` (or ``STAGES``, for a pair such as ``prism_pca`` + ``prism``)
built with keyword fields: its work-unit function and driver-side steps, what it writes (from
:class:`~ray_dissect.job.layout.JobDir` paths), the spec fields its output depends on, the
spec sections it owns, its preflight checks and the report page it adds. The engine (``run``,
``prepare``, ``status``, the runtime's driver) reads only these fields, so adding a stage
edits no engine module. The helpers below build the ``covers`` functions stages share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ray_dissect.datasets.base import ImageDataset
from ray_dissect.job.layout import JobDir
from ray_dissect.pipeline.context import JobContext, Plan
from ray_dissect.report.pages import ReportPage
from ray_dissect.spec import SCHEDULING_FIELDS, JobSpec
from ray_dissect.spec.base import hashed_data
from ray_dissect.storage import AnyPath

Covers = Callable[[dict[str, Any], JobSpec], dict[str, Any]]
Shapes = dict[str, tuple[int, ...]]

T = TypeVar("T")


@dataclass(frozen=True)
class ModelInfo:
    """What a stage's preflight :attr:`Stage.check` sees of the model.

    Attributes:
        model: the job's model (a ``torch.nn.Module`` in eval mode, on the CPU, no hooks).
        shapes: per job layer, its output shape (units, h, w) (a (units,) output as
            (units, 1, 1)).
        images: the dataset's size.
    """

    model: Any
    shapes: Shapes
    images: int


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of a job (every field is given by keyword).

    Attributes:
        name: the stage's name (manifest key, ``status`` row, progress bar).
        runs_on: ``"actors"`` (model replicas, a GPU each where there is one) or ``"tasks"``.
        work: the work-unit function, ``work(env, *plan.shared, *call)``; pure, no Ray.
        plan: driver side, before the work: which work units are still to do (``None`` when
            this job does not use the stage).
        collect: driver side, as each call returns: store its result; returns the number of
            work units it finished.
        finish: driver side, after the work: load the stage's outputs into the context;
            returns the number of bad samples the stage found.
        outputs: what the stage writes, as paths of the job directory (``--force`` removes
            these when the stage's inputs changed).
        covers: the spec fields the stage's output depends on beyond earlier stages' (its hash
            covers these and those of every earlier stage that owns nothing), or ``None`` for
            the whole spec except the sections other stages own.
        owns: top-level spec sections only this stage depends on. Such a stage is a leaf:
            no other stage's hash covers its section or its ``covers``, so changing the
            section redoes this stage alone.
        check_dataset: preflight, torch-free, before the model is built: raise
            :class:`~ray_dissect.errors.SpecError` when the spec asks the stage for something
            the spec or the dataset cannot give.
        check: preflight, once the model is built and its layers probed, before any work:
            raise ``SpecError`` for what the model cannot give; returns the output shapes of
            the extra layers whose maps the stage stores (usually ``{}``).
        report: the page the stage adds to the report (its nav entry and writer), or None.
        calls_per_actor: calls kept in flight per model actor (``runs_on="actors"``); above
            1 the work function must be thread-safe (the actor runs them in threads).
        timings: seconds per step of a call's work (e.g. decode, forward, write), taken from
            its result; the driver sums them per stage into the manifest (``status`` shows
            them). ``None``: the stage reports none.
        on_gpus: a ``"tasks"`` stage whose work runs on the model actors instead when they
            hold GPUs (the work function then computes on ``env.device``); on CPU-only jobs
            it stays on CPU tasks.
        used: whether a job of a spec runs the stage (``status`` lists only those); ``None``:
            every job does. It must agree with ``plan`` returning None.
    """

    name: str
    runs_on: Literal["actors", "tasks"]
    work: Callable[..., Any]
    plan: Callable[[JobContext], Plan | None]
    collect: Callable[[JobContext, Any, Any], int]
    finish: Callable[[JobContext], int]
    outputs: Callable[[JobDir], tuple[AnyPath, ...]]
    covers: Covers | None
    owns: tuple[str, ...] = ()
    check_dataset: Callable[[JobSpec, ImageDataset], None] | None = None
    check: Callable[[JobSpec, ModelInfo], Shapes] | None = None
    report: ReportPage | None = None
    calls_per_actor: int = 1
    timings: Callable[[Any], dict[str, float]] | None = None
    on_gpus: bool = False
    used: Callable[[JobSpec], bool] | None = None


def resources(data: dict[str, Any]) -> dict[str, Any]:
    """The hashed spec's ``resources`` without the scheduling fields."""
    return {k: v for k, v in data["resources"].items() if k not in SCHEDULING_FIELDS}


def uses(group: Literal["analyses", "studies"], name: str) -> Callable[[JobSpec], bool]:
    """A stage's ``used``: the spec sets ``<group>.<name>``."""
    return lambda spec: getattr(getattr(spec, group), name) is not None


def dissecting(spec: JobSpec) -> bool:
    """A concept stage's ``used``: the method scores concepts (every kind but ``none``)."""
    return spec.dissects


def required_section(spec: JobSpec, group: Literal["analyses", "studies"], name: str,
                     kind: type[T]) -> T:
    """``spec.<group>.<name>`` for the stage that runs only with it (its plan returned None
    without it, so a missing section here is a bug, not a user error)."""
    value = getattr(getattr(spec, group), name)
    if not isinstance(value, kind):
        raise RuntimeError(f"a stage that runs only with {group}.{name} ran without it")
    return value


def section(spec: JobSpec, group: Literal["analyses", "studies"], name: str
            ) -> dict[str, Any] | None:
    """``spec.<group>.<name>`` as JSON without the fields added later that hold their defaults
    (:func:`~ray_dissect.spec.base.hashed_data`: so a stage's hash stays the one earlier
    versions wrote), None when the spec leaves it out."""
    value = getattr(getattr(spec, group), name)
    return hashed_data(value) if value is not None else None


def label_inputs(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    """The method fields the NetDissect labels and IoUs depend on beyond the thresholds (the
    search's fields do not change them)."""
    return {name: data["method"].get(name) for name in fields}
