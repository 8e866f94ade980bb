"""The job spec: one frozen pydantic model, validated once at the boundary.

A job spec is YAML (see ``jobs/``). Unknown keys are refused. Relative paths in the spec are
resolved against the current directory when the spec is loaded, so a stored spec is absolute.
Each stage receives only its own sub-spec.
"""


from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ray_dissect.errors import SpecError
from ray_dissect.spec.analyses import AnalysesSpec
from ray_dissect.spec.base import ADDED_LATER, UNIQUE, Frozen, digest, hashed_data
from ray_dissect.spec.dataset import DATASET_FORMATS, FORMATS_BY_NAME, AnyDatasetSpec
from ray_dissect.spec.messages import plain_message
from ray_dissect.spec.method import (
    METHOD_KINDS,
    DissectionMethod,
    Method,
    NetDissectMethod,
    NoMethod,
)
from ray_dissect.spec.model import ModelSpec
from ray_dissect.spec.outputs import TopImagesSpec
from ray_dissect.spec.studies import StudiesSpec
from ray_dissect.spec.units import UnitsSpec

SPEC_VERSION: Literal[1] = 1
SCHEDULING_FIELDS = ("actors", "cpus_per_actor", "actor_resources", "cpus_per_task",
                     "units_per_task", "decode_threads", "queue_batches", "signature_mb")
# Union tags that pydantic puts in an error's location (not field names).
TAGS = {("method", k) for k in METHOD_KINDS} | {("dataset", f) for f in DATASET_FORMATS}


class ResourceSpec(Frozen):
    """How the work is spread over the cluster.

    ``shard_images`` images form one work unit of extraction and one Zarr shard (written whole
    by one actor); it must be a multiple of ``batch_size``. ``gpus_per_actor: auto`` takes one
    GPU per actor when the cluster has GPUs, else none. ``threads_per_actor`` fixes torch's
    intra-op threads so results do not depend on how many actors run.

    Extraction in each actor is a pipeline (:mod:`ray_dissect.pipeline.shard_pipeline`):
    ``decode_threads`` threads decode and normalise images (``auto``: ``cpus_per_actor -
    threads_per_actor``, at least 1) into a ring of ``queue_batches`` batch buffers while one
    thread runs the model and another writes Zarr; both are scheduling fields (the output is
    the same whatever their values). ``gpu_decode`` (default off, results-changing, so hashed
    when set) decodes JPEGs with nvJPEG on the actor's GPU; it is a no-op on CPU actors.

    ``signature_mb`` caps the unit-mask signatures a scoring (or threshold-sweep) task holds
    at once, by an upper bound: a block's units are scored in passes over the images that
    fit it (:mod:`ray_dissect.pipeline.stages.scoring`). A scheduling field: the records are the
    same whatever its value; a smaller value costs a pass over the images per extra pass.
    """

    actors: Annotated[int, Field(gt=0, le=1024)] = 2
    """Model replicas (Ray actors) that run extraction and the other model stages."""
    gpus_per_actor: Literal["auto"] | Annotated[float, Field(ge=0)] = "auto"
    """`auto`: one GPU each when the cluster has GPUs, else none; or a number."""
    cpus_per_actor: Annotated[float, Field(gt=0)] = 1.0
    """CPUs each model actor reserves (give decode threads room on GPU actors, e.g. 8)."""
    actor_resources: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    """Custom Ray resources each model actor requests (e.g. `{accelerator_node: 1}`)."""
    threads_per_actor: Annotated[int, Field(gt=0, le=256)] = 1
    """Torch intra-op threads per actor (fixed, so results do not depend on the number of actors).
    """
    batch_size: Annotated[int, Field(gt=0, le=4096)] = 32
    """Images per forward pass."""
    shard_images: Annotated[int, Field(gt=0)] = 256
    """Images per extraction work unit and Zarr shard (a multiple of `batch_size`)."""
    cpus_per_task: Annotated[float, Field(gt=0)] = 1.0
    """CPUs each CPU task (concepts, thresholds, scoring) reserves."""
    units_per_task: Annotated[int, Field(gt=0)] = 128
    """Units per scoring / search task."""
    decode_threads: Literal["auto"] | Annotated[int, Field(gt=0, le=256)] = "auto"
    """Image-decoding threads per actor (`auto`: cpus_per_actor - threads_per_actor, at least 1)."""
    queue_batches: Annotated[int, Field(gt=0, le=64)] = 4
    """Batch buffers in each actor's decode ring."""
    gpu_decode: Annotated[bool, ADDED_LATER] = False
    """Decode JPEGs with nvJPEG on the actor's GPU (pixels differ slightly from PIL's; a no-op on
    CPU).
    """
    signature_mb: Annotated[float, Field(gt=0), ADDED_LATER] = 512.0
    """Cap, by an upper bound, on the unit-mask signatures a scoring or threshold-sweep task holds;
    more passes when exceeded.
    """

    @model_validator(mode="after")
    def _shards_hold_whole_batches(self) -> ResourceSpec:
        if self.shard_images % self.batch_size:
            raise ValueError(
                f"shard_images ({self.shard_images}) must be a multiple of batch_size "
                f"({self.batch_size})"
            )
        return self


class JobSpec(Frozen):
    """A whole dissection job. Validated once; every stage reads its own part.

    ``units`` picks the units of every layer the job dissects (:mod:`ray_dissect.spec.units`):
    the activation store keeps only those, so every stage runs on them and the records hold
    exactly them (under their indices in the layer)."""

    spec_version: Literal[1] = SPEC_VERSION
    """Version of the spec format (1)."""
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = "dissect"
    """Job name, kept in the records' provenance."""
    model: ModelSpec
    """Which network, which weights, how images are preprocessed."""
    layers: Annotated[tuple[str, ...], Field(min_length=1), UNIQUE]
    """Module names, globs (`features.*`, `**`) or module types (`type:ReLU`); see `ray-dissect
    layers`.
    """
    dataset: AnyDatasetSpec
    """The concept dataset or image folder; `format` picks the reader."""
    method: Method = NetDissectMethod()
    """What is computed per unit; `kind` picks the method."""
    resources: ResourceSpec = ResourceSpec()
    """How the work is spread over the cluster."""
    top_images: Annotated[TopImagesSpec, ADDED_LATER] = TopImagesSpec()
    """The images each record names."""
    analyses: Annotated[AnalysesSpec, ADDED_LATER] = AnalysesSpec()
    """Optional visual analyses (attribution, receptive fields, PRISM)."""
    studies: Annotated[StudiesSpec, ADDED_LATER] = StudiesSpec()
    """Optional studies of the labels."""
    units: Annotated[UnitsSpec, ADDED_LATER] = "all"
    """Which units of each layer to dissect: `all`, a list of unit indices (applied to every
    layer), or `{random: N, seed: S}` (CCE's `--random_units`, a seeded draw per layer)."""

    @model_validator(mode="after")
    def _blackout_without_crop(self) -> JobSpec:
        if self.model.preprocess.resize is not None and self.studies.concept_blackout:
            raise ValueError("studies.concept_blackout does not support model.preprocess.resize "
                             "(it blacks out whole images); drop one of them")
        return self

    @property
    def dissects(self) -> bool:
        """Whether the job scores concepts (any method kind but ``none``)."""
        return not isinstance(self.method, NoMethod)

    def dissection(self) -> DissectionMethod:
        """The method, for the stages that score concepts (never called for ``none``)."""
        if isinstance(self.method, NoMethod):
            raise SpecError("method 'none' scores no concepts",
                            hint="a concept stage ran for a job without dissection (a bug)")
        return self.method

    def spec_hash(self) -> str:
        """A stable hash of what determines the results (first 16 hex digits of a sha256).

        Pure scheduling fields (``SCHEDULING_FIELDS``: how many actors, CPUs per actor or task,
        units per task) are left out: they do not change any number, so a job may be resumed
        with more or fewer workers. Batch and shard sizes, threads and GPUs stay in. Fields
        added after the first release count only when they differ from their defaults
        (:mod:`ray_dissect.spec.base`). A factory file and a checkpoint count by content, not
        by path (:mod:`ray_dissect.spec.fingerprint`): computing the hash reads them (a
        checkpoint's digest is cached beside it).
        """
        return digest(self.hash_data())

    def hash_data(self) -> dict[str, Any]:
        """What the spec hash covers: the JSON dump without scheduling fields and without
        later-added fields at their defaults, the model's files by their content fingerprints
        (stage hashes take their parts from this)."""
        data = hashed_data(self)
        data["model"] = self.model.content_data(data["model"])
        for key in SCHEDULING_FIELDS:
            data["resources"].pop(key, None)
        return data


def _absolute(spec_dict: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve the spec's relative local paths against ``base``."""
    dataset = spec_dict.get("dataset")
    if isinstance(dataset, dict):
        fmt = FORMATS_BY_NAME.get(str(dataset.get("format", DATASET_FORMATS[0])))
        for key in fmt.paths if fmt is not None else ():
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


_MEMBER_TAG = re.compile(r"^(int|float|str|bool|(literal|tuple|list|dict|function-\w+|"
                         r"nullable|union)\[.*|constrained-\w+)$")


def _member_tag(part: str | int) -> bool:
    """Whether a location part names a union member's type (``constrained-float``,
    ``literal['all']``), not a field: pydantic puts these after the field of a union."""
    return isinstance(part, str) and _MEMBER_TAG.match(part) is not None


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"] if not _member_tag(p)]
    if len(loc) > 1 and (loc[0], loc[1]) in TAGS:
        del loc[1]  # a union's tag, not a field
    field = ".".join(loc) or "(top level)"
    known = list(JobSpec.model_fields) if len(loc) == 1 else None
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"invalid job spec {source}: {plain_message(first, field, known)}{more}"


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
        data = yaml.load(text, Loader=NoAliasLoader)  # a SafeLoader without aliases
    except AliasError as err:
        raise SpecError(f"job spec {str(path)!r} uses a YAML alias ({err})",
                        expected="no aliases (*name): a spec is refused before they expand",
                        hint="write the value out where it is used") from None
    except yaml.YAMLError as err:
        raise SpecError(f"job spec {str(path)!r} is not valid YAML: {err}".replace("\n", " "),
                        hint="check indentation") from None
    return parse_spec(data, source=str(path))


class AliasError(yaml.YAMLError):
    """A YAML alias in a job spec (refused: aliases can expand exponentially)."""


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses every alias while composing, before any expansion:
    a few hundred bytes of nested aliases ("billion laughs") expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise AliasError(f"*{event.anchor} at line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)
