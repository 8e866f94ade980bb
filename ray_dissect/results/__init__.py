"""A job's results as Python objects: ``open_job(DIR)`` (a :class:`JobResults`: spec,
summary, records, activations, the dataset's images) and ``to_pandas(results, layer)`` (one
row per unit and range), read from what the job wrote. Building the HTML report from them is
``ray_dissect.build_report(results)``, above this package.
May import: `records`, `job`, `datasets`, `visualize` (``show``: a unit's map on any image),
`spec`, `storage`, `errors`; never `report` (the
report reads results, not the other way round).
"""

from ray_dissect.results.job import JobResults, open_job, to_pandas

__all__ = ["JobResults", "open_job", "to_pandas"]
