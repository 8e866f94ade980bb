"""A job's results as Python objects: ``ray_dissect.open_job(DIR)``.

>>> job = open_job("runs/demo")                       # a path or an fsspec URI
>>> job.summary.layers[0].interpretable               # JobSummary (None while unfinished)
>>> recs = job.records("_bn1")                        # validated UnitRecords, unit order
>>> df = job.to_pandas("_bn1")                        # one row per unit and range ([pandas])
>>> acts = job.activations("_bn1")                    # Zarr array (N, units, h, w) float32
>>> means = job.range_metrics_frame()                 # mean metrics per layer and range
>>> ray_dissect.build_report(job)                     # the HTML report in DIR/report/

It reads only what the job wrote (``spec.json``, ``summary.json``, ``records/``,
``errors.jsonl``, ``activations.zarr``, ``thresholds/``) and the dataset the spec names; a
partial job (some layers without records, no summary yet) opens too.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ray_dissect import storage
from ray_dissect.concepts.cropped import read_labels
from ray_dissect.datasets.base import ConceptDataset
from ray_dissect.errors import RayDissectError, SpecError, StoreError
from ray_dissect.job.layout import JobDir, layer_key
from ray_dissect.models.crop import resize_crop
from ray_dissect.records.build import summarize_layer
from ray_dissect.records.io import read_unit_records
from ray_dissect.records.schema import (
    Explanation,
    JobSummary,
    LayerSummary,
    SampleError,
    UnitRecord,
)
from ray_dissect.results.metrics import METRIC_NAMES, RANGE_METRIC_COLUMNS, range_metric_rows
from ray_dissect.spec import JobSpec, NoMethod
from ray_dissect.storage import AnyPath, arrays

if TYPE_CHECKING:
    import pandas

    from ray_dissect.datasets.base import ImageDataset

CACHED_IMAGES = 256


class JobResults:
    """The results in one job directory (see the module docstring).

    Args:
        root: the job directory, a local path or an fsspec URI.

    Raises:
        SpecError: ``root`` holds no ``spec.json`` (not a job directory).
    """

    def __init__(self, root: str | Path | AnyPath) -> None:
        self.root = storage.location(root)
        self.job = JobDir(self.root)
        if not (self.root / "spec.json").exists():
            raise SpecError(f"{str(root)!r} is not a job directory (no spec.json)",
                            hint="give the --out directory of a `ray-dissect run`")
        self._records: dict[str, list[UnitRecord]] = {}
        self._images: OrderedDict[tuple[str, int], Any] = OrderedDict()

    @cached_property
    def spec(self) -> JobSpec:
        """The job's validated spec."""
        return JobSpec.model_validate_json(storage.read_text(self.root / "spec.json"))

    @cached_property
    def summary(self) -> JobSummary | None:
        """The job's summary, or None while the job has not finished."""
        try:
            return JobSummary.model_validate_json(storage.read_text(self.root / "summary.json"))
        except FileNotFoundError:
            return None

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers the spec dissects, in spec order."""
        return self.spec.layers

    def has_records(self, layer: str) -> bool:
        """Whether ``records/<layer>.jsonl`` has been written."""
        return self.job.records(self._known(layer)).exists()

    def missing_layers(self) -> list[str]:
        """The spec's layers without records yet (a partial job)."""
        return [layer for layer in self.layers if not self.has_records(layer)]

    def records(self, layer: str) -> list[UnitRecord]:
        """The layer's validated records in unit order (empty while not yet written)."""
        if layer not in self._records:
            path = self.job.records(self._known(layer))
            self._records[layer] = list(read_unit_records(path)) if path.exists() else []
        return self._records[layer]

    def layer_summary(self, layer: str) -> LayerSummary:
        """The summary's totals of a layer, or the same totals computed from its records."""
        for s in self.summary.layers if self.summary else []:
            if s.layer == layer:
                return s
        return summarize_layer(layer, self.records(layer), self.iou_threshold)

    def errors(self) -> list[SampleError]:
        """The samples the job could not use (``errors.jsonl``)."""
        path = self.root / "errors.jsonl"
        if not path.exists():
            return []
        text = storage.read_text(path)
        return [SampleError.model_validate_json(line) for line in text.splitlines() if line]

    def bad_images(self) -> frozenset[int]:
        """Indices of images left out of every count."""
        return frozenset(e.index for e in self.errors())

    def activations(self, layer: str) -> Any:
        """The layer's activations, a read-only Zarr array (N, units, h, w) float32; with
        the spec's ``units:`` only the chosen units, position p being ``records(layer)[p]``."""
        return arrays.open_array(self.job.activations_zarr, layer_key(self._known(layer)))

    def feature_shape(self, layer: str) -> tuple[int, ...] | None:
        """(units, h, w) of the layer's activations, None when they are not there."""
        try:
            return tuple(int(n) for n in self.activations(layer).shape[1:])
        except StoreError:
            return None

    def thresholds(self, layer: str) -> dict[str, Any]:
        """``thresholds/<layer>.npz``: thresholds (U,), nonfinite (U,), ranges (U, c, 2)."""
        return storage.load_npz(self.job.thresholds(self._known(layer)))

    @property
    def iou_threshold(self) -> float:
        """The method's iou_threshold (0 for method none: no unit is labelled anyway)."""
        method = self.spec.method
        return 0.0 if isinstance(method, NoMethod) else method.iou_threshold

    @property
    def quantile_text(self) -> str:
        """The method's quantile as shown ('-' for method none)."""
        method = self.spec.method
        return "-" if isinstance(method, NoMethod) else f"{method.quantile:g}"

    @property
    def denominator(self) -> str:
        """The IoU denominator ('-' for method none)."""
        method = self.spec.method
        return "-" if isinstance(method, NoMethod) else method.denominator

    @cached_property
    def dataset(self) -> ImageDataset:
        """The dataset the spec names (opened on first use)."""
        from ray_dissect.datasets.registry import open_dataset

        return open_dataset(self.spec.dataset)

    def image_side(self) -> int | None:
        """The larger side of the dataset's first image as its index lists it (None when the
        dataset cannot be opened)."""
        try:
            samples = self.dataset.samples
        except RayDissectError:
            return None
        return max(samples[0].image_size) if samples else None

    def image(self, index: int) -> np.ndarray:
        """Dataset image ``index``, (H, W, 3) uint8 (the last ``CACHED_IMAGES`` are kept:
        a report shows the same top images for many units).

        Raises:
            BadSampleError: the image cannot be read.
        """
        return self._cached("image", index, self.dataset.read_image)

    def view(self, index: int) -> np.ndarray:
        """Image ``index`` as the network's input covers it: with ``preprocess.resize`` the
        (size, size, 3) uint8 centre crop, else the dataset image (cached as :meth:`image`).

        Raises:
            BadSampleError: the image cannot be read.
        """
        resize, size = self.spec.model.preprocess.resize, self.spec.model.preprocess.size
        if resize is None:
            return self.image(index)
        return self._cached("view", index, lambda i: resize_crop(self.image(i), resize, size))

    def labels(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Dataset labels of image ``index``: pixel (L, sh, sw) and whole (n,) int32, the
        pixel labels cropped like :meth:`view` (cached as :meth:`image`)."""
        dataset = self.dataset
        if not isinstance(dataset, ConceptDataset):  # format images: no labels to outline
            return np.zeros((0, 1, 1), np.int32), np.zeros(0, np.int32)
        pre = self.spec.model.preprocess
        return self._cached("labels", index, lambda i: read_labels(dataset, i, pre))

    def _cached(self, kind: str, index: int, read: Any) -> Any:
        key = (kind, index)
        if key in self._images:
            self._images.move_to_end(key)
            return self._images[key]
        value = self._images[key] = read(index)
        if len(self._images) > 2 * CACHED_IMAGES:
            self._images.popitem(last=False)
        return value

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` as plain JSON (stage hashes, progress, runs), {} if absent."""
        try:
            return dict(json.loads(storage.read_text(self.root / "manifest.json")))
        except FileNotFoundError:
            return {}

    def best_explanations(self, layer: str, n: int = 1) -> list[tuple[int, Explanation]]:
        """The ``n`` explanations with the highest IoU in a layer, as (unit, explanation)."""
        found = [(r.unit, e) for r in self.records(layer) for e in r.explanations
                 if e.text is not None]
        return sorted(found, key=lambda ue: (-ue[1].iou, ue[0], ue[1].range_index))[:n]

    def rows(self, layer: str) -> list[dict[str, Any]]:
        """One flat dict per unit and range (a unit without explanations has one row with
        ``range_index`` None): what :meth:`to_pandas` tabulates."""
        kind, t = self.spec.method.kind, self.iou_threshold
        return [row for rec in self.records(layer) for row in record_rows(rec, kind, t)]

    def to_pandas(self, layer: str) -> pandas.DataFrame:
        """The layer as a DataFrame, one row per unit and range (see :func:`to_pandas`)."""
        return to_pandas(self, layer)

    def range_metrics(self, layer: str | None = None) -> list[dict[str, Any]]:
        """CCE's ``compute_metrics`` summary: a row per layer (all, or ``layer``) and range
        index with the mean IoU and metrics over the units (:mod:`ray_dissect.results.metrics`;
        columns :data:`RANGE_METRIC_COLUMNS`)."""
        layers = self.layers if layer is None else (self._known(layer),)
        return [row for name in layers for row in range_metric_rows(name, self.records(name))]

    def range_metrics_frame(self, layer: str | None = None) -> pandas.DataFrame:
        """:meth:`range_metrics` as a DataFrame (needs ``[pandas]``)."""
        return _frame(self.range_metrics(layer), RANGE_METRIC_COLUMNS)

    def _known(self, layer: str) -> str:
        if layer not in self.layers:
            raise SpecError("unknown layer", given=layer, expected=f"one of {list(self.layers)}",
                            hint="use a layer named in the job's spec")
        return layer


ROW_DTYPES: dict[str, str] = {
    "layer": "object", "unit": "int64", "threshold": "float64", "label": "object",
    "category": "object", "label_iou": "float64", "formula": "object",
    "formula_iou": "float64", "best_iou": "float64", "interpretable": "bool",
    "mask_pixels": "int64", "nonfinite": "int64", "range_index": "Int64", "lo": "float64",
    "hi": "float64", "inclusive": "boolean", "range_pixels": "Int64", "visited": "Int64",
    "best_unary": "object", "best_unary_iou": "float64",
    **dict.fromkeys(METRIC_NAMES, "float64")}
"""The columns of :meth:`JobResults.to_pandas` and their pandas dtypes (missing values are
NaN in float columns, ``<NA>`` in the nullable ``Int64``/``boolean`` ones, None in text)."""
ROW_COLUMNS = tuple(ROW_DTYPES)


def best_iou(rec: UnitRecord, method: str) -> float:
    """The IoU a unit is judged by for its method: the label's for ``netdissect``, the best
    range formula's for ``compositional``/``clustered`` (0 when it has none), NaN for
    ``none`` (nothing is scored)."""
    if method == "none":
        return math.nan
    if method == "netdissect":
        return rec.label.iou if rec.label else 0.0
    return max((e.iou for e in rec.explanations if e.text is not None), default=0.0)


def judged_interpretable(rec: UnitRecord, method: str, iou_threshold: float) -> bool:
    """Whether :func:`best_iou` passes: the label (netdissect, the record's
    ``interpretable``) or a range formula (compositional, clustered) has IoU >=
    ``iou_threshold``; never for method none."""
    if method == "netdissect":
        return rec.interpretable
    return any(e.text is not None and e.iou >= iou_threshold for e in rec.explanations)


def record_rows(rec: UnitRecord, method: str = "netdissect", iou_threshold: float = 0.0
                ) -> list[dict[str, Any]]:
    """The rows of one record (see :meth:`JobResults.rows`); ``method`` and
    ``iou_threshold`` (the job's) decide ``best_iou`` and ``interpretable``."""
    base = {"layer": rec.layer, "unit": rec.unit,
            "threshold": math.nan if rec.threshold is None else rec.threshold,
            "label": rec.label.name if rec.label else None,
            "category": rec.label.category if rec.label else None,
            "label_iou": rec.label.iou if rec.label else math.nan,
            "best_iou": best_iou(rec, method),
            "interpretable": judged_interpretable(rec, method, iou_threshold),
            "mask_pixels": rec.mask_pixels, "nonfinite": rec.nonfinite}
    if not rec.explanations:
        return [{**dict.fromkeys(ROW_COLUMNS), **_no_explanation(), **base}]
    return [{**base, **_explanation_row(e)} for e in rec.explanations]


def _no_explanation() -> dict[str, Any]:
    return {c: math.nan for c, dtype in ROW_DTYPES.items() if dtype == "float64"}


def _explanation_row(e: Explanation) -> dict[str, Any]:
    metrics = e.metrics.model_dump() if e.metrics else {}
    return {"range_index": e.range_index, "lo": e.lo,
            "hi": e.hi if e.hi is not None else math.inf, "inclusive": e.inclusive,
            "range_pixels": e.mask_pixels, "formula": e.text,
            "formula_iou": e.iou if e.text is not None else math.nan, "visited": e.visited,
            "best_unary": e.best_unary.name if e.best_unary else None,
            "best_unary_iou": e.best_unary.iou if e.best_unary else math.nan,
            **{m: _or_nan(metrics.get(m)) for m in METRIC_NAMES}}


def _or_nan(x: float | None) -> float:
    return math.nan if x is None else x


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pandas.DataFrame:
    try:
        import pandas as pd
    except ImportError:
        raise SpecError("to_pandas needs pandas", expected="pandas installed",
                        hint="pip install 'ray-dissect[pandas]'") from None
    return pd.DataFrame(rows, columns=columns)


def open_job(root: str | Path | AnyPath) -> JobResults:
    """The results of the job directory ``root`` (a path or an fsspec URI)."""
    return JobResults(root)


def to_pandas(results: JobResults, layer: str) -> pandas.DataFrame:
    """``layer`` of a job as a DataFrame, one row per unit and range (:meth:`JobResults.rows`;
    needs ``[pandas]``).

    Columns (:data:`ROW_DTYPES`), per unit: ``layer`` str, ``unit`` int64, ``threshold``
    float64 (NaN: no finite value), ``label``/``category`` str or None (the single best
    concept), ``label_iou`` float64 (NaN without label), ``best_iou`` float64 (the IoU the
    unit is judged by for its method: ``label_iou`` for netdissect, the best range's
    ``formula_iou`` for compositional/clustered, NaN for method none), ``interpretable`` bool
    (``best_iou >= iou_threshold``, the report's badge), ``mask_pixels``, ``nonfinite``
    int64; per range (NaN/<NA>/None on a unit's single row without ranges): ``range_index``,
    ``range_pixels``, ``visited`` Int64, ``lo``, ``hi`` float64 (``hi`` inf when open),
    ``inclusive`` boolean, ``formula`` str, ``formula_iou`` float64, ``best_unary`` str,
    ``best_unary_iou`` and the metrics float64. Sort by ``best_iou`` to rank units of any
    method.

    Raises:
        SpecError: pandas is not installed, or ``layer`` is not one of the job's.
    """
    return _frame(results.rows(layer), ROW_COLUMNS).astype(ROW_DTYPES)
