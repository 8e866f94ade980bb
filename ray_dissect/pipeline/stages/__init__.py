"""One module per stage (or stage pair): its work-unit function and driver-side steps.
May import: what `pipeline` may, and the engine modules `pipeline.context` and
`pipeline.shard_pipeline`.
"""
