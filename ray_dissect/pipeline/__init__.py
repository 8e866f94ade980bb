"""The stages of a job: the one stage table (`stages`), the worker-side environment each
work unit runs in (`env`), one module per stage with its work units and driver-side steps,
and `status` (per-stage progress from the manifest). Nothing here imports Ray: the runtime
runs these functions on actors and tasks; tests call them in-process.
May import: every package below `runtime` (`records`, `job`, `explain`, ...).
"""
