"""The stages of a job and the engine that runs them (docs/architecture.md).

The engine: `stage` (what a stage declares: `Stage`, `ModelInfo`), `table` (the ordered stage
list, their hashes, the stages' report pages), `context` (the driver's `JobContext`, a
stage's `Plan` and the worker-side `WorkEnv` each work unit runs in), `shard_pipeline` (the
extraction's threaded decode/forward/write pipeline), `prepare` (preflight checks, including
the stages' hooks; the job directory), `run` (walk the table; in-process executor), `summary`
(records, errors and summary after the last stage) and `status` (per-stage progress from the
manifest). The stages: one module per stage (or stage pair) in `stages/`, each exporting its
`STAGE`. Nothing here imports Ray: the runtime runs these functions on actors and tasks;
tests call them in-process.
May import: every package below `runtime` (`report`, `results`, `records`, `job`, ...).
"""
