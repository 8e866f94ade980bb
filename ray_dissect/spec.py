"""The job spec: one frozen pydantic model, validated once at the boundary.

A job spec is YAML (see ``jobs/``). Unknown keys are refused. Relative paths in the spec are
resolved against the current directory when the spec is loaded, so a stored spec is absolute.
Each stage receives only its own sub-spec.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from ray_dissect.errors import SpecError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_VERSION = 1
SCHEDULING_FIELDS = ("actors", "cpus_per_actor", "actor_resources", "cpus_per_task",
                     "units_per_task")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PreprocessSpec(_Frozen):
    """Images are resized to ``size`` x ``size`` (bilinear), scaled to [0, 1] and normalised."""

    size: Annotated[int, Field(gt=0, le=4096)] = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[Annotated[float, Field(gt=0)], ...] = IMAGENET_STD

    @field_validator("std")
    @classmethod
    def _three_channels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) != 3:
            raise ValueError(f"needs 3 values (R, G, B), got {len(value)}")
        return value


class CheckpointWeights(_Frozen):
    """A local state dict, loaded with ``torch.load(..., weights_only=True)``."""

    checkpoint: Path


class ModelSpec(_Frozen):
    """Which network to dissect.

    Exactly one of ``name`` (a torchvision classification model) or ``factory``
    (``"path/to/file.py:function"`` or ``"package.module:function"`` returning an ``nn.Module``;
    this runs user code) must be given. ``weights`` applies to both: ``none`` keeps the
    initialisation, a torchvision weights name (``DEFAULT``, ``IMAGENET1K_V1``) downloads them
    (``name`` only), ``{checkpoint: PATH}`` loads a local state dict.
    """

    name: str | None = None
    factory: str | None = None
    weights: str | CheckpointWeights = "none"
    kwargs: dict[str, Any] = Field(default_factory=dict)
    preprocess: PreprocessSpec = PreprocessSpec()

    @field_validator("name")
    @classmethod
    def _known_torchvision_model(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import torchvision

        available = torchvision.models.list_models(module=torchvision.models)
        if value not in available:
            close = [n for n in available if n.startswith(value[:3])][:4] or ["resnet18"]
            raise ValueError(f"unknown torchvision classification model; try one of {close}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of 'name' (torchvision) or 'factory'")
        if self.factory is not None and isinstance(self.weights, str) and self.weights != "none":
            raise ValueError("a factory model takes weights 'none' or {checkpoint: PATH}")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError("factory must look like 'path/file.py:function' or 'pkg.mod:function'")
        return self


class DatasetSpec(_Frozen):
    """The concept dataset (Broden format).

    ``subset`` keeps index rows whose image path contains the substring (as CCE does with
    ``ade20k``); ``categories`` restricts the concept categories (default: all in the dataset);
    ``limit`` keeps the first N rows after filtering.
    """

    format: Literal["broden"] = "broden"
    root: str
    limit: Annotated[int, Field(gt=0)] | None = None
    subset: str | None = None
    categories: tuple[str, ...] | None = None


class CocoDatasetSpec(_Frozen):
    """A COCO-format concept dataset (read with pycocotools).

    ``annotations`` is an instances JSON (``stuff`` optionally a stuff JSON of the same
    images); ``panoptic`` a panoptic JSON whose PNGs are in ``panoptic_masks`` (default: the
    JSON path without ``.json``). At least one of ``annotations`` and ``panoptic`` is needed;
    the images are those of ``annotations`` if given, else of ``panoptic``. ``root`` is the
    image directory. Object categories (panoptic things) are pixel concepts of the category
    ``object``, stuff categories (panoptic stuff) of ``stuff``, and their supercategories a
    second category ``supercategory``. Masks are rasterised at ``mask_size`` x ``mask_size``.
    """

    format: Literal["coco"] = "coco"
    root: str
    annotations: str | None = None
    stuff: str | None = None
    panoptic: str | None = None
    panoptic_masks: str | None = None
    mask_size: Annotated[int, Field(gt=0, le=1024)] = 112
    limit: Annotated[int, Field(gt=0)] | None = None
    categories: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _some_annotations(self) -> CocoDatasetSpec:
        if self.annotations is None and self.panoptic is None:
            raise ValueError("give 'annotations' (instances JSON) or 'panoptic' (panoptic "
                             "JSON), or both")
        if self.panoptic_masks is not None and self.panoptic is None:
            raise ValueError("'panoptic_masks' needs 'panoptic' (the panoptic JSON)")
        return self


def _dataset_format(value: Any) -> str:
    """The dataset's ``format``; a dataset given without one is Broden."""
    if isinstance(value, dict):
        return str(value.get("format", "broden"))
    return str(getattr(value, "format", "broden"))


AnyDatasetSpec = Annotated[
    Annotated[DatasetSpec, Tag("broden")] | Annotated[CocoDatasetSpec, Tag("coco")],
    Discriminator(_dataset_format)]


class _MethodBase(_Frozen):
    """What every method computes: NetDissect labels from the top-``quantile`` activations.

    ``denominator: plain`` is the dataset-wide IoU |B and L| / |B or L| (compexp, CCE);
    ``category`` is NetDissect-Lite's category-conditional activation term.
    """

    quantile: Annotated[float, Field(gt=0, lt=1)] = 0.005
    iou_threshold: Annotated[float, Field(ge=0, le=1)] = 0.04
    denominator: Literal["plain", "category"] = "plain"
    top_k: Annotated[int, Field(gt=0, le=100)] = 5


class NetDissectMethod(_MethodBase):
    """Network Dissection: one label per unit (Bau et al. 2017)."""

    kind: Literal["netdissect"] = "netdissect"


class CompositionalMethod(_MethodBase):
    """Compositional Explanations (Mu & Andreas 2020): a formula per unit, by beam search.

    Formulas over the dataset's concepts with OR, AND, AND NOT, of at most ``length`` leaves
    (``count_not`` also counts NOT, as compexp does). The first beam holds ``first_beam``
    atoms (default 2 x ``beam``, as CCE; compexp used ``beam``). ``dedup: equivalence`` (CCE)
    drops logically equivalent candidates; ``string`` (compexp) only identical ones.
    ``heuristic`` prunes candidates with CCE's admissible IoU bounds (same result, fewer exact
    IoUs counted in ``visited``; a study tool: it needs every pixel's label set in memory).
    ``concept_masking`` adds CCE's cosine concept-masking score of each explanation (forward
    passes of the images containing the formula, everything outside it randomly dimmed), on
    the model actors; ``masking_images`` caps the images per explanation (the first ones).
    """

    kind: Literal["compositional"] = "compositional"
    length: Annotated[int, Field(ge=1, le=10)] = 3
    beam: Annotated[int, Field(ge=1, le=100)] = 5
    first_beam: Annotated[int, Field(ge=1, le=1000)] | None = None
    count_not: bool = False
    dedup: Literal["equivalence", "string"] = "equivalence"
    heuristic: Literal["none", "mmesh", "cfh", "areas"] = "none"
    concept_masking: bool = False
    masking_images: Annotated[int, Field(gt=0)] | None = None


class ClusteredMethod(CompositionalMethod):
    """Clustered Compositional Explanations (La Rosa et al. 2023): a formula per activation range.

    Each unit's activations (exact zeros dropped when all are >= 0) are split into ``clusters``
    ranges by 1-D k-means (k-means++ seeded by ``seed``). A range's mask holds the upsampled
    values inside [lo, hi] (``bounds: inclusive``, the default, so every member value counts)
    or strictly inside (lo, hi) (``strict``, as CCE's code). ``clusters: 1`` is the quantile
    mode: the range (threshold, +inf), exactly as ``compositional``.
    """

    kind: Literal["clustered"] = "clustered"  # type: ignore[assignment]
    clusters: Annotated[int, Field(ge=1, le=32)] = 5
    seed: int = 0
    bounds: Literal["inclusive", "strict"] = "inclusive"


def _method_kind(value: Any) -> str:
    """The method's ``kind``; a method given without one is NetDissect."""
    if isinstance(value, dict):
        return str(value.get("kind", "netdissect"))
    return str(getattr(value, "kind", "netdissect"))


METHOD_KINDS = ("netdissect", "compositional", "clustered")
TAGS = {("method", k) for k in METHOD_KINDS} | {("dataset", "broden"), ("dataset", "coco")}
Method = Annotated[
    Annotated[NetDissectMethod, Tag("netdissect")]
    | Annotated[CompositionalMethod, Tag("compositional")]
    | Annotated[ClusteredMethod, Tag("clustered")],
    Discriminator(_method_kind)]


class ResourceSpec(_Frozen):
    """How the work is spread over the cluster.

    ``shard_images`` images form one work unit of extraction and one Zarr shard (written whole
    by one actor); it must be a multiple of ``batch_size``. ``gpus_per_actor: auto`` takes one
    GPU per actor when the cluster has GPUs, else none. ``threads_per_actor`` fixes torch's
    intra-op threads so results do not depend on how many actors run.
    """

    actors: Annotated[int, Field(gt=0, le=1024)] = 2
    gpus_per_actor: Literal["auto"] | Annotated[float, Field(ge=0)] = "auto"
    cpus_per_actor: Annotated[float, Field(gt=0)] = 1.0
    actor_resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    threads_per_actor: Annotated[int, Field(gt=0, le=256)] = 1
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    shard_images: Annotated[int, Field(gt=0)] = 256
    cpus_per_task: Annotated[float, Field(gt=0)] = 1.0
    units_per_task: Annotated[int, Field(gt=0)] = 128

    @model_validator(mode="after")
    def _shards_hold_whole_batches(self) -> ResourceSpec:
        if self.shard_images % self.batch_size:
            raise ValueError(
                f"shard_images ({self.shard_images}) must be a multiple of batch_size "
                f"({self.batch_size})"
            )
        return self


class JobSpec(_Frozen):
    """A whole dissection job. Validated once; every stage reads its own part."""

    spec_version: Literal[1] = SPEC_VERSION
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = "dissect"
    model: ModelSpec
    layers: Annotated[tuple[str, ...], Field(min_length=1)]
    dataset: AnyDatasetSpec
    method: Method = NetDissectMethod()
    resources: ResourceSpec = ResourceSpec()

    @field_validator("layers")
    @classmethod
    def _unique_layers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("layers must be unique")
        return value

    def spec_hash(self) -> str:
        """A stable hash of what determines the results (first 16 hex digits of a sha256).

        Pure scheduling fields (``SCHEDULING_FIELDS``: how many actors, CPUs per actor or task,
        units per task) are left out: they do not change any number, so a job may be resumed
        with more or fewer workers. Batch and shard sizes, threads and GPUs stay in.
        """
        data = self.model_dump(mode="json")
        for key in SCHEDULING_FIELDS:
            data["resources"].pop(key)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _absolute(spec_dict: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve the spec's relative local paths against ``base``."""
    dataset = spec_dict.get("dataset")
    if isinstance(dataset, dict):
        for key in ("root", "annotations", "stuff", "panoptic", "panoptic_masks"):
            value = dataset.get(key)
            if isinstance(value, str) and "://" not in value:
                dataset[key] = str((base / value).resolve())
    model = spec_dict.get("model")
    if isinstance(model, dict):
        weights = model.get("weights")
        if isinstance(weights, dict) and isinstance(weights.get("checkpoint"), str):
            weights["checkpoint"] = str((base / weights["checkpoint"]).resolve())
        factory = model.get("factory")
        if isinstance(factory, str) and factory.split(":")[0].endswith(".py"):
            file, func = factory.rsplit(":", 1)
            model["factory"] = f"{(base / file).resolve()}:{func}"
    return spec_dict


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if len(loc) > 1 and (loc[0], loc[1]) in TAGS:
        del loc[1]  # a union's tag, not a field
    field = ".".join(loc) or "(top level)"
    given = first.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid job spec {source}: field '{field}': {first['msg']}{shown}{more}"


def parse_spec(data: Any, *, source: str = "<spec>", base: Path | None = None) -> JobSpec:
    """Validate a spec given as a mapping; raise :class:`SpecError` with a one-line message."""
    if not isinstance(data, dict):
        raise SpecError(f"job spec {source} is not a mapping", given=type(data).__name__,
                        expected="a YAML mapping with model, layers, dataset",
                        hint="copy jobs/demo.yaml")
    data = _absolute(json.loads(json.dumps(data)), base or Path.cwd())
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_one_line(err, source), hint="see jobs/demo.yaml and schemas/") from None


def load_spec(path: Path | str) -> JobSpec:
    """Read and validate a YAML job spec; relative paths resolve against the current directory."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SpecError(f"cannot read job spec {str(path)!r}: {err.strerror}",
                        hint="check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"job spec {str(path)!r} is not valid YAML: {err}".replace("\n", " "),
                        hint="check indentation") from None
    return parse_spec(data, source=str(path))
