"""A job's results as Python objects: ``ray_dissect.open_job(DIR)`` (summary, records,
DataFrames, activations), read from what the job wrote.
May import: `records`, `job`, `datasets`, `visualize` (``show``: a unit's map on any image),
`spec`, `storage`, `errors`; never `report` (the
report reads results, not the other way round).
"""

from ray_dissect.results.job import JobResults, open_job

__all__ = ["JobResults", "open_job"]
