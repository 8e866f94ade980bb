"""Beam against optimal search (``ray-dissect compare-search DIR``).

A job run with ``method.search: optimal`` records, for every explained range, the beam's
answer the branch and bound started from (``certificate.beam``) and the formula it returned.
Per layer this gives the share of beam formulas that were suboptimal (a strictly lower IoU
than the search's) and the IoU they lost. Ranges whose search ran out of budget count with
the best formula found (a lower bound of the loss); ``proved`` says how many were proved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ray_dissect import storage
from ray_dissect.errors import SpecError
from ray_dissect.records.schema import UnitRecord
from ray_dissect.records.studies import LayerSearchComparison, SearchComparisonReport
from ray_dissect.storage import AnyPath
from ray_dissect.studies.compare import _job

TOLERANCE = 1e-12  # both IoUs are ratios of the same integer counts


def _searched(records: Sequence[UnitRecord]) -> list[tuple[float, float, bool, float | None]]:
    """(iou, beam's iou, proved, seconds) of each explanation an optimal search certified."""
    return [(e.iou, c.beam.iou, c.optimal, c.seconds) for r in records for e in r.explanations
            if (c := e.certificate) is not None and c.beam is not None]


def compare_layer(layer: str, records: Sequence[UnitRecord]) -> LayerSearchComparison:
    """The layer's beam-against-optimal figures (see the module docstring)."""
    found = _searched(records)
    best = np.array([f[0] for f in found], dtype=np.float64)
    lost = np.maximum(best - np.array([f[1] for f in found], dtype=np.float64), 0.0)
    worse = lost > TOLERANCE
    relative = lost / np.where(best > 0, best, 1.0)
    seconds = np.array([f[3] for f in found if f[3] is not None], dtype=np.float64)
    return LayerSearchComparison(
        layer=layer, explanations=len(found), proved=sum(f[2] for f in found),
        suboptimal=int(worse.sum()), suboptimal_share=float(worse.mean()) if found else 0.0,
        iou_lost_mean=float(lost.mean()) if found else 0.0,
        iou_lost_max=float(lost.max(initial=0.0)),
        relative_lost_max=float(relative.max(initial=0.0)),
        seconds_median=float(np.median(seconds)) if seconds.size else None,
        seconds_p99=float(np.quantile(seconds, 0.99)) if seconds.size else None)


def compare_search(root: str | AnyPath) -> SearchComparisonReport:
    """The comparison of a finished job run with ``method.search: optimal``.

    Raises:
        SpecError: not a finished explained job, or one run with ``search: beam``.
    """
    where = storage.location(root)
    spec, records = _job(where)
    if getattr(spec.method, "search", "beam") != "optimal":
        raise SpecError(f"job {str(where)!r} ran the beam search only",
                        given="method.search: beam", expected="method.search: optimal",
                        hint="rerun the job with search: optimal to record both answers")
    return SearchComparisonReport(
        job=str(where), spec_hash=spec.spec_hash(),
        layers=[compare_layer(layer, records[layer]) for layer in spec.layers])
