"""The static HTML report built from a job's records, summary, spec and activations.

``build_report(open_job(DIR))`` builds it from the results API (:mod:`ray_dissect.results`,
below this package): ``render`` (the work unit, one block of units: ``draw`` its tiles,
sprites and histograms over the pure-numpy ``tiles``, then its unit pages) -> ``build`` (the
driver: layer, index, concepts, classes and about pages from ``pages``, ``views``,
``catalog`` and the inline-SVG ``plots``; Jinja templates in ``templates/``); ``visuals`` /
``visual_pages`` / ``visual_tiles`` show the visualisation stages (receptive fields per unit,
the attribution and PRISM pages), ``studies`` and ``study_plots`` the studies page, when the
job ran studies. ``meta`` holds the options and what a render block records. The site opens
from ``file://``: no network, no modules, no fonts.
May import: `results`, `records`, `job`, `storage`, `errors` and the analysis packages whose
results it shows (`datasets`, `models`, `concepts`, `units`, `explain`, `visualize`).
"""

from ray_dissect.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
