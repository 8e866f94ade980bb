"""ray_dissect: distributed Network Dissection of trained CNNs on Ray.

The data flow, one folder per concern: ``datasets`` -> ``concepts`` (label-set index) and
``models`` (activations) -> ``units`` (thresholds, ranges) -> ``explain`` (scoring, search) ->
``records``; ``pipeline`` declares the stages, ``runtime`` runs them on Ray (README, Layout);
``open_job(DIR)`` reads a job's results (``results``) and ``build_report(results)`` builds
its HTML report (``report``, with every stage's pages).
Nothing heavy is imported here: names below load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["JobResults", "JobSpec", "JobSummary", "UnitRecord", "__version__", "build_report",
           "load_spec", "open_job", "run_job"]

_LAZY = {
    "JobSpec": "ray_dissect.spec",
    "load_spec": "ray_dissect.spec",
    "UnitRecord": "ray_dissect.records.schema",
    "JobSummary": "ray_dissect.records.schema",
    "run_job": "ray_dissect.runtime.driver",
    "open_job": "ray_dissect.results",
    "JobResults": "ray_dissect.results",
    "build_report": "ray_dissect.pipeline.table",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ray_dissect' has no attribute {name!r}")
