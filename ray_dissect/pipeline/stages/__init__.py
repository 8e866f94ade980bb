"""One module per stage (or stage pair): its work-unit function, driver-side steps, covers
function, outputs, preflight checks and report page, declared as ``STAGE`` (``STAGES`` for
a pair) and listed in order in :mod:`ray_dissect.pipeline.table`.
May import: what `pipeline` may, and the engine modules `pipeline.stage`, `pipeline.context`
and `pipeline.shard_pipeline` (never `pipeline.table`, `prepare` or `run`).
"""
