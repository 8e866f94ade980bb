"""Before any work: check the spec against the dataset and the model, and prepare the job
directory (refusing one that holds another job, or clearing the stale stages with force).

Besides the engine's own checks (dataset, method, layers), every stage's preflight hooks run
here, in table order: ``check_dataset`` before the model is built, ``check`` once it is
(:class:`~ray_dissect.pipeline.stage.Stage`)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from ray_dissect import __version__, storage
from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.datasets.registry import concept_formats, open_dataset
from ray_dissect.errors import SpecError, StoreError
from ray_dissect.job.layout import JobDir
from ray_dissect.job.manifest import (
    Manifest,
    StageState,
    read_manifest,
    write_manifest,
)
from ray_dissect.models.build import build_model, check_layers, expand_layers, probe_layers
from ray_dissect.pipeline.stage import ModelInfo, Shapes
from ray_dissect.pipeline.status import used_stages
from ray_dissect.pipeline.table import (
    job_manifest,
    stage,
    stage_hashes,
    stage_names,
    stages,
    stale_stages,
)
from ray_dissect.spec import JobSpec
from ray_dissect.spec.messages import did_you_mean
from ray_dissect.spec.units import selected_units
from ray_dissect.storage import AnyPath

log = logging.getLogger(__name__)


def preflight(spec: JobSpec
              ) -> tuple[JobSpec, ImageDataset, dict[str, tuple[int, ...]]]:
    """Check everything checkable before any work: dataset, model, layers and their shapes.

    Returns the spec with its layer patterns expanded to module names (what the job directory
    stores, so a resume sees the same layers), the dataset and, per layer, its output shape
    (units, h, w) (a (units,) output is taken as (units, 1, 1)); the layers whose maps the
    analyses store (attribution feature maps, PRISM's PCA and GE layers) are included.

    Raises:
        SpecError: the method needs concept labels the dataset does not have (see
            :func:`require_concepts`), a stage's preflight check refuses the spec (e.g. a
            study's needs are not met), the torchvision model name is unknown, a layer is
            unknown or has no usable output.
        DatasetError, ModelError: the dataset or the model cannot be opened, or a study
            that reads the model's decisions finds no (batch, classes) logits.
    """
    dataset = check_dataset(spec)
    spec, shapes = check_model(spec, len(dataset))
    return spec, dataset, shapes


def check_dataset(spec: JobSpec) -> ImageDataset:
    """The first half of :func:`preflight`, torch-free: open the dataset, check that it has
    the concepts the method scores, and run the stages' ``check_dataset`` hooks."""
    dataset = require_concepts(spec, open_dataset(spec.dataset))
    for s in stages():
        if s.check_dataset is not None:
            s.check_dataset(spec, dataset)
    return dataset


def check_model(spec: JobSpec, images: int
                ) -> tuple[JobSpec, dict[str, tuple[int, ...]]]:
    """The second half of :func:`preflight`: build the model, expand and check the layers,
    probe their output shapes, then run the stages' ``check`` hooks (``images``: the
    dataset's size). Returns the spec and the shapes of the job's layers and of the extra
    layers the hooks name. Raises as :func:`preflight`."""
    model = build_model(spec.model)
    layers = expand_layers(model, spec.layers)
    if layers != spec.layers:
        spec = spec.model_copy(update={"layers": layers})
    check_layers(model, spec.layers)
    check_classifier(model, spec)
    shapes = _layer_shapes(model, spec)
    info = ModelInfo(model, shapes, images)
    extra: Shapes = {}
    for s in stages():
        if s.check is not None:
            extra |= s.check(spec, info)
    return spec, shapes | extra


def check_classifier(model: Any, spec: JobSpec) -> None:
    """``model.classifier``, when named, must be a module with a 2-D ``weight`` (classes x
    units; the report's classes page reads it).

    Raises:
        SpecError: no such module (with its close match), or one without a 2-D weight.
    """
    name = spec.model.classifier
    if name is None:
        return
    modules = dict(model.named_modules())
    if name not in modules:
        raise SpecError(f"job spec field 'model.classifier': {name!r} is not a module of the "
                        f"model{did_you_mean(name, [n for n in modules if n])}",
                        hint="name the linear head, e.g. '_fc' or 'fc'; see `ray-dissect "
                             "layers JOB.yaml`")
    weight = getattr(modules[name], "weight", None)
    if getattr(weight, "ndim", 0) != 2:
        raise SpecError(f"job spec field 'model.classifier': {name!r} has no (classes, units) "
                        "weight", given=type(modules[name]).__name__,
                        expected="a linear module", hint="name the model's last Linear")


def _layer_shapes(model: Any, spec: JobSpec) -> Shapes:
    """Per job layer, its output shape (units, h, w); a (units,) output as (units, 1, 1).

    Raises:
        SpecError: a layer runs more than once per forward pass, or outputs neither."""
    probed = probe_layers(model, spec.model.preprocess.size, spec.layers,
                          layouts=spec.model.layouts)
    shared = [name for name, _, calls in probed if calls > 1]
    if shared:
        raise SpecError(f"job spec field 'layers': {shared[0]!r} runs more than once in one "
                        "forward pass, so its output is not one map per image",
                        given=f"{len(shared)} shared module(s)",
                        hint="pick modules called once (e.g. a block's output, not a shared "
                             "ReLU); see `ray-dissect layers`")
    shapes = {name: shape for name, shape, _ in probed}
    for layer in spec.layers:
        if layer not in shapes or len(shapes[layer]) not in (1, 3):
            raise SpecError(f"job spec field 'layers': layer {layer!r} does not output a "
                            "(units,) or (units, h, w) tensor", given=shapes.get(layer),
                            hint="pick a convolutional module; see `ray-dissect layers`")
        if len(shapes[layer]) == 1:
            shapes[layer] = (*shapes[layer], 1, 1)
        selected_units(spec.units, layer, shapes[layer][0])  # refuses indices out of range
    return shapes


def require_concepts(spec: JobSpec, dataset: ImageDataset) -> ImageDataset:
    """``dataset``, if it has the concept labels the method scores (every kind but ``none``:
    netdissect, compositional, clustered); checked right after opening it, before the model
    is built.

    Raises:
        SpecError: the dataset has none (``format: images``), naming format and method.
    """
    if isinstance(dataset, ConceptDataset) or not spec.dissects:
        return dataset
    raise SpecError(f"dataset format {spec.dataset.format!r} has no concept labels; method "
                    f"{spec.method.kind!r} needs them",
                    hint=f"use a concept dataset (format {concept_formats()}), e.g. "
                         "`ray-dissect make-dataset DIR` for a generated one")


def _refuse_or_clear(spec: JobSpec, job: JobDir, old: Manifest, force: bool) -> None:
    stale = stale_stages(old, spec)
    if not force:
        kept = [s for s in used_stages(job.root) if s not in stale]  # the old job's stages
        raise SpecError(
            f"output directory {str(job.root)!r} holds a different job (spec "
            f"{old.spec_hash}, this one {spec.spec_hash()}); changed stages: "
            f"{', '.join(stale)}", hint="choose a new --out, or pass --force to redo "
            f"the changed stages there (reusing: {', '.join(kept) or 'nothing'})")
    for name in stale:
        for output in stage(name).outputs(job):
            storage.remove_tree(output)


def _with_every_stage(manifest: Manifest, spec: JobSpec) -> Manifest:
    """Add stages the manifest does not know yet (a directory written by an older version)."""
    for name, digest in stage_hashes(spec).items():
        manifest.stages.setdefault(name, StageState(hash=digest))
    return manifest


def _stored_spec(root: AnyPath) -> JobSpec | None:
    """The spec in ``DIR/spec.json``, or None when it is missing or unreadable."""
    try:
        return JobSpec.model_validate_json(storage.read_text(root / "spec.json"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValidationError):
        log.warning("%s is unreadable", root / "spec.json")
        return None


def _has_outputs(root: AnyPath) -> bool:
    """Whether ``root`` holds any stage output (more than a spec and a manifest)."""
    return any(name not in ("spec.json", "manifest.json") for name in storage.list_files(root))


def _old_manifest(spec: JobSpec, root: AnyPath, force: bool) -> Manifest | None:
    """The manifest of the job in ``root``: ``manifest.json``, or, when it is missing or
    corrupt, one rebuilt from ``spec.json`` (its stage hashes; the done markers say what is
    done). A directory with outputs but neither is refused without ``force`` (with it, every
    output is removed)."""
    try:
        manifest = read_manifest(root)
    except StoreError as err:
        log.warning("%s; rebuilding it from spec.json", err.what)
        manifest = None
    if manifest is not None:
        return manifest
    stored = _stored_spec(root)
    if stored is not None:
        if _has_outputs(root):
            log.warning("%s has no readable manifest; rebuilt from its spec.json", root)
        return job_manifest(stored, __version__)
    if _has_outputs(root):
        _clear_unknown(root, force)
    return None


def _clear_unknown(root: AnyPath, force: bool) -> None:
    """Outputs nothing names the spec of: refused, or with ``force`` removed."""
    if not force:
        raise SpecError(f"output directory {str(root)!r} holds job outputs but no readable "
                        "manifest.json or spec.json, so what they belong to is unknown",
                        hint="choose a new --out, or pass --force to remove them and start over")
    log.warning("removing the outputs of an unknown job in %s (--force)", root)
    job = JobDir(root)
    for name in stage_names():
        for output in stage(name).outputs(job):
            storage.remove_tree(output)


def prepare_job_dir(spec: JobSpec, root: AnyPath, force: bool = False
                    ) -> tuple[JobDir, Manifest]:
    """Create the job directory, or check that an existing one holds the same job.

    The job there is the one of its manifest, or of its ``spec.json`` when the manifest is
    missing or corrupt (:func:`_old_manifest`). With ``force``, a directory holding another
    spec is reused: the outputs of the stages whose inputs changed (and of every later stage)
    are removed, earlier ones are kept.
    """
    job = JobDir(root)
    try:
        old = _old_manifest(spec, root, force)
        if old is not None and old.spec_hash != spec.spec_hash():
            _refuse_or_clear(spec, job, old, force)
            old = None
        job.make()
        manifest = (_with_every_stage(old, spec) if old is not None
                    else job_manifest(spec, __version__))
        storage.write_text(root / "spec.json", spec.model_dump_json(indent=2) + "\n")
        write_manifest(root, manifest)
    except OSError as err:
        reason = err.strerror or str(err)
        raise StoreError(f"cannot write the output directory {str(root)!r}: {reason}",
                         hint="choose a writable --out (an existing bucket for URIs)") from None
    return job, manifest
