"""Before any work: check the spec against the dataset and the model, and prepare the job
directory (refusing one that holds another job, or clearing the stale stages with force)."""

from __future__ import annotations

from typing import Any

from ray_dissect import __version__, storage
from ray_dissect.datasets.base import ConceptDataset, ImageDataset
from ray_dissect.datasets.registry import concept_formats, open_dataset
from ray_dissect.errors import ModelError, SpecError, StoreError
from ray_dissect.job.layout import JobDir
from ray_dissect.job.manifest import (
    Manifest,
    StageState,
    read_manifest,
    write_manifest,
)
from ray_dissect.models.build import build_model, check_layers, expand_layers, probe_layers
from ray_dissect.pipeline.table import (
    STAGE_NAMES,
    job_manifest,
    stage,
    stage_hashes,
    stale_stages,
)
from ray_dissect.spec import ClusteredMethod, JobSpec
from ray_dissect.storage import AnyPath


def _check_analyses(model: Any, spec: JobSpec) -> None:
    """The modules the analyses name exist (and CAM has a linear head)."""
    attribution = spec.analyses.attribution
    if attribution is None:
        return
    names = {name for name, _ in model.named_modules() if name}
    fields = [("layer", attribution.layer), ("head", attribution.head),
              *(("feature_layers", layer) for layer in attribution.feature_layers)]
    for field, name in fields:
        if name is not None and name not in names:
            raise SpecError(f"job spec field 'analyses.attribution.{field}': {name!r} is not a "
                            "module of the model", hint="see `ray-dissect layers JOB.yaml`")
    if "cam" in attribution.methods and attribution.head is None:
        from ray_dissect.pipeline.stages.attribution import default_head

        default_head(model)


CONCEPT_STUDIES = ("threshold_sweep", "unit_ablation", "concept_blackout")
LOGIT_STUDIES = ("ranges_importance", "unit_ablation")


def _study_error(name: str, what: str, hint: str) -> SpecError:
    return SpecError(f"job spec field 'studies.{name}': {what}", hint=hint)


def check_studies(spec: JobSpec, dataset: ImageDataset) -> None:
    """The studies' needs, before any work: ``ranges_importance`` needs a clustered method with
    ``clusters >= 2``; the concept studies need a concept dataset and a method that scores
    concepts.

    Raises:
        SpecError: naming the study, what it needs and what the spec gives.
    """
    studies, method = spec.studies, spec.method
    if studies.ranges_importance is not None and (
            not isinstance(method, ClusteredMethod) or method.clusters < 2):
        given = f"{method.kind}" + (f" with clusters {method.clusters}"
                                    if isinstance(method, ClusteredMethod) else "")
        raise _study_error("ranges_importance", f"needs method kind 'clustered' with clusters "
                           f">= 2 (got {given})", "set method: {kind: clustered} or drop the "
                           "study")
    for name in CONCEPT_STUDIES:
        if getattr(studies, name) is None:
            continue
        if not isinstance(dataset, ConceptDataset):
            raise _study_error(name, f"needs a concept dataset (got format "
                               f"{spec.dataset.format!r})", f"use a {concept_formats()} dataset, "
                               "or drop the study")
        if not spec.dissects:
            raise _study_error(name, "needs a method that scores concepts (got 'none')",
                               "use method netdissect, compositional or clustered")


def _check_logits(model: Any, spec: JobSpec) -> None:
    """With a study that reads the model's decisions, its output must be (batch, classes)."""
    if any(getattr(spec.studies, name) is not None for name in LOGIT_STUDIES):
        from ray_dissect.studies.hooks import check_logits

        check_logits(model, spec.model.preprocess.size)


def _field(name: str) -> str:
    return f"job spec field 'analyses.{name}'"


def _check_receptive_fields(spec: JobSpec, shapes: dict[str, tuple[int, ...]]) -> None:
    """RF layers are among the job's layers (their top images come from the top_images
    stage), with the listed units, ``top_k`` top images and room for the occluder."""
    rf = spec.analyses.receptive_fields
    if rf is None:
        return
    for layer in rf.layers:
        if layer not in spec.layers:
            raise SpecError(f"{_field('receptive_fields.layers')}: {layer!r} is not among the "
                            "job's layers", expected=f"one of {list(spec.layers)}",
                            hint="add it to `layers` (its top images come from them)")
        units = shapes[layer][0]
        if rf.units != "all" and max(rf.units) >= units:
            raise SpecError(f"{_field('receptive_fields.units')}: unit {max(rf.units)} of "
                            f"layer {layer!r}", expected=f"indices below its {units} units")
    if rf.top_k > spec.top_images.k:
        raise SpecError(f"{_field('receptive_fields.top_k')}: {rf.top_k} top images",
                        expected=f"at most top_images.k ({spec.top_images.k})",
                        hint="raise top_images.k or lower top_k")
    if rf.occluder > spec.model.preprocess.size:
        raise SpecError(f"{_field('receptive_fields.occluder')}: {rf.occluder} px",
                        expected=f"at most the input size {spec.model.preprocess.size}")


def _check_unit_attribution(spec: JobSpec, shapes: dict[str, tuple[int, ...]]) -> None:
    """The unit-attribution layer is one of the job's layers, with the listed units and
    ``top_k`` top images."""
    section = spec.analyses.unit_attribution
    if section is None:
        return
    if section.layer not in spec.layers:
        raise SpecError(f"{_field('unit_attribution.layer')}: {section.layer!r} is not among "
                        "the job's layers", expected=f"one of {list(spec.layers)}",
                        hint="add it to `layers` (its top images come from them)")
    units = shapes[section.layer][0]
    if section.units != "all" and max(section.units) >= units:
        raise SpecError(f"{_field('unit_attribution.units')}: unit {max(section.units)} of "
                        f"layer {section.layer!r}", expected=f"indices below its {units} units")
    if section.top_k > spec.top_images.k:
        raise SpecError(f"{_field('unit_attribution.top_k')}: {section.top_k} top images",
                        expected=f"at most top_images.k ({spec.top_images.k})",
                        hint="raise top_images.k or lower top_k")


def _check_prism(model: Any, spec: JobSpec, images: int) -> dict[str, tuple[int, ...]]:
    """PRISM's layers exist, run once, the GE layers before the PCA layer, which has >= 3
    channels; returns their output shapes (C, h, w)."""
    from ray_dissect.models.truncate import call_order

    prism = spec.analyses.prism
    if prism is None:
        return {}
    names = {name for name, _ in model.named_modules() if name}
    for layer in (prism.layer, *prism.ge_layers):
        if layer not in names:
            raise SpecError(f"{_field('prism')}: {layer!r} is not a module of the model",
                            hint="see `ray-dissect layers JOB.yaml`")
    layers = [prism.layer, *prism.ge_layers]
    try:
        order = call_order(model, layers, spec.model.preprocess.size)
    except ModelError as err:
        raise SpecError(f"{_field('prism')}: {err.what}", hint=err.hint) from None
    if order[-1] != prism.layer:
        raise SpecError(f"{_field('prism.ge_layers')}: {order[-1]!r} runs after the PCA layer "
                        f"{prism.layer!r}", hint="GE layers lie between the input and `layer`")
    shapes = {name: shape for name, shape, _ in
              probe_layers(model, spec.model.preprocess.size, layers)}
    if len(shapes[prism.layer]) != 3 or shapes[prism.layer][0] < 3:
        raise SpecError(f"{_field('prism.layer')}: {prism.layer!r} outputs "
                        f"{shapes[prism.layer]}", expected="(C, h, w) maps with C >= 3")
    if prism.clusters is not None and prism.clusters > min(images, prism.limit):
        raise SpecError(f"{_field('prism.clusters')}: {prism.clusters} clusters",
                        expected=f"at most the {min(images, prism.limit)} images PRISM covers")
    return shapes


def preflight(spec: JobSpec
              ) -> tuple[JobSpec, ImageDataset, dict[str, tuple[int, ...]]]:
    """Check everything checkable before any work: dataset, model, layers and their shapes.

    Returns the spec with its layer patterns expanded to module names (what the job directory
    stores, so a resume sees the same layers), the dataset and, per layer, its output shape
    (units, h, w) (a (units,) output is taken as (units, 1, 1)); the layers whose maps the
    analyses store (attribution feature maps, PRISM's PCA and GE layers) are included.

    Raises:
        SpecError: the method needs concept labels the dataset does not have (see
            :func:`require_concepts`), a study's needs are not met (:func:`check_studies`),
            the torchvision model name is unknown, a layer is unknown or has no usable
            output.
        DatasetError, ModelError: the dataset or the model cannot be opened, or a study
            that reads the model's decisions finds no (batch, classes) logits.
    """
    dataset = check_dataset(spec)
    spec, shapes = check_model(spec, len(dataset))
    return spec, dataset, shapes


def check_dataset(spec: JobSpec) -> ImageDataset:
    """The first half of :func:`preflight`, torch-free: open the dataset, check that it has
    the concepts the method scores and what the studies need."""
    dataset = require_concepts(spec, open_dataset(spec.dataset))
    check_studies(spec, dataset)
    _check_folder_target(spec, dataset)
    return dataset


def _check_folder_target(spec: JobSpec, dataset: ImageDataset) -> None:
    """``target: folder`` needs images in class folders (format ``images``)."""
    attribution = spec.analyses.attribution
    if attribution is None or attribution.target != "folder":
        return
    if not getattr(dataset, "classes", ()):
        raise SpecError("job spec field 'analyses.attribution.target': 'folder' needs images "
                        "in class folders", given=spec.dataset.format,
                        expected="format: images with one subfolder per class",
                        hint="use target: predicted")


def check_model(spec: JobSpec, images: int
                ) -> tuple[JobSpec, dict[str, tuple[int, ...]]]:
    """The second half of :func:`preflight`: build the model, expand and check the layers,
    the analyses' layers and the logits, probe the output shapes (``images``: the dataset's
    size, which bounds PRISM's clusters). Raises as :func:`preflight`."""
    model = build_model(spec.model)
    layers = expand_layers(model, spec.layers)
    if layers != spec.layers:
        spec = spec.model_copy(update={"layers": layers})
    check_layers(model, spec.layers)
    _check_analyses(model, spec)
    _check_logits(model, spec)
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
    _check_receptive_fields(spec, shapes)
    _check_unit_attribution(spec, shapes)
    analysed = _analysis_shapes(model, spec) | _check_prism(model, spec, images)
    return spec, shapes | analysed


def _analysis_shapes(model: Any, spec: JobSpec) -> dict[str, tuple[int, ...]]:
    """Output shapes of the layers whose maps the analyses store (attribution feature maps)."""
    attribution = spec.analyses.attribution
    if attribution is None or not attribution.map_layers:
        return {}
    field = "feature_layers" if attribution.feature_layers else "layer"
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape, _ in probe_layers(model, spec.model.preprocess.size,
                                       list(attribution.map_layers)):
        if len(shape) != 3:
            raise SpecError(f"job spec field 'analyses.attribution.{field}': {name!r} does not "
                            "output (channels, h, w) maps", given=shape,
                            hint="pick a convolutional module")
        shapes[name] = shape
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
        kept = [s for s in STAGE_NAMES if s not in stale]
        raise SpecError(
            f"output directory {str(job.root)!r} holds a different job (spec "
            f"{old.spec_hash}, this one {spec.spec_hash()}); changed stages: "
            f"{', '.join(stale)}", hint="choose a new --out, or pass --force to redo "
            f"the changed stages there (reusing: {', '.join(kept) or 'nothing'})")
    for name in stale:
        for output in stage(name).outputs:
            storage.remove_tree(job.root / output)


def _with_every_stage(manifest: Manifest, spec: JobSpec) -> Manifest:
    """Add stages the manifest does not know yet (a directory written by an older version)."""
    for name, digest in stage_hashes(spec).items():
        manifest.stages.setdefault(name, StageState(hash=digest))
    return manifest


def prepare_job_dir(spec: JobSpec, root: AnyPath, force: bool = False
                    ) -> tuple[JobDir, Manifest]:
    """Create the job directory, or check that an existing one holds the same job.

    With ``force``, a directory holding another spec is reused: the outputs of the stages
    whose inputs changed (and of every later stage) are removed, earlier ones are kept.
    """
    job = JobDir(root)
    try:
        old = read_manifest(root)
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
