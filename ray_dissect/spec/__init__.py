"""The job spec: one frozen pydantic `JobSpec`, validated once at the boundary (CLI, API).

Holds: `base` (shared pydantic base, constants), `model`, `dataset`, `method` (the sub-specs;
`dataset` also registers the dataset formats, as `formats` defines them),
`job` (`ResourceSpec`, `JobSpec`, `parse_spec`, `load_spec`) and `fingerprint` (the content
digests of factory files and checkpoints that the spec hash covers, checkpoints' cached
beside them). The names are re-exported here, so `from ray_dissect.spec import JobSpec` is
the way in.
May import: `ray_dissect.errors` only (no torch at import time).
"""

from ray_dissect.spec.analyses import (
    AnalysesSpec,
    AttributionSpec,
    PrismSpec,
    ReceptiveFieldsSpec,
)
from ray_dissect.spec.dataset import (
    CONCEPT_FORMATS,
    DATASET_FORMATS,
    FORMATS,
    FORMATS_BY_NAME,
    IMAGE_EXTENSIONS,
    AnyDatasetSpec,
    CocoDatasetSpec,
    DatasetSpec,
    ImagesDatasetSpec,
    PascalPartDatasetSpec,
)
from ray_dissect.spec.formats import PATH, DatasetFormat, FormatSpec, one_of
from ray_dissect.spec.job import (
    SCHEDULING_FIELDS,
    SPEC_VERSION,
    JobSpec,
    ResourceSpec,
    load_spec,
    parse_spec,
)
from ray_dissect.spec.method import (
    METHOD_KINDS,
    ClusteredMethod,
    CompositionalMethod,
    Method,
    NetDissectMethod,
    NoMethod,
)
from ray_dissect.spec.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointWeights,
    LayerLayout,
    ModelSpec,
    PreprocessSpec,
)
from ray_dissect.spec.outputs import TopImagesSpec
from ray_dissect.spec.studies import (
    ConceptBlackoutSpec,
    HeuristicsSpec,
    RangesImportanceSpec,
    StudiesSpec,
    ThresholdSweepSpec,
    UnitAblationSpec,
)

__all__ = [
    "CONCEPT_FORMATS",
    "DATASET_FORMATS",
    "FORMATS",
    "FORMATS_BY_NAME",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "METHOD_KINDS",
    "PATH",
    "SCHEDULING_FIELDS",
    "SPEC_VERSION",
    "AnalysesSpec",
    "AnyDatasetSpec",
    "AttributionSpec",
    "CheckpointWeights",
    "ClusteredMethod",
    "CocoDatasetSpec",
    "CompositionalMethod",
    "ConceptBlackoutSpec",
    "DatasetFormat",
    "DatasetSpec",
    "FormatSpec",
    "HeuristicsSpec",
    "ImagesDatasetSpec",
    "JobSpec",
    "LayerLayout",
    "Method",
    "ModelSpec",
    "NetDissectMethod",
    "NoMethod",
    "PascalPartDatasetSpec",
    "PreprocessSpec",
    "PrismSpec",
    "RangesImportanceSpec",
    "ReceptiveFieldsSpec",
    "ResourceSpec",
    "StudiesSpec",
    "ThresholdSweepSpec",
    "TopImagesSpec",
    "UnitAblationSpec",
    "load_spec",
    "one_of",
    "parse_spec",
]
